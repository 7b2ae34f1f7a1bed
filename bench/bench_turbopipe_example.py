"""TurboPipe's own examples/ffmpeg.py loop, with ``turbopipe`` 2.1 and with
``framebus.turbopipe``, alternating, each run in a fresh process.

The loop (as in the example: one moderngl buffer of random bytes, NBUFFER=1, 1080p
rgb24 into ``ffmpeg -f null``)::

    turbopipe.sync(memoryview(buffer.mglo))
    turbopipe.pipe(memoryview(buffer.mglo), fileno)

moderngl's standalone context needs an X display: an Xvfb is started (Mesa llvmpipe).
fps = frames / (first pipe -> FFmpeg's exit); median of --repeats runs per module.

    python bench/bench_turbopipe_example.py [--frames 600] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

CHILD = r"""
import os, subprocess, sys, time
import moderngl
if sys.argv[1] == "turbopipe":
    import turbopipe as tp
else:
    from framebus import turbopipe as tp
W, H, N = 1920, 1080, int(sys.argv[2])
ctx = moderngl.create_standalone_context()
buffer = ctx.buffer(os.urandom(W * H * 3))
ffmpeg = subprocess.Popen(
    ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
     "-s", f"{W}x{H}", "-r", "60", "-i", "-", "-f", "null", "-", "-y"], stdin=subprocess.PIPE)
fileno = ffmpeg.stdin.fileno()
time.sleep(0.2)
t0 = time.perf_counter()
for _ in range(N):
    tp.sync(memoryview(buffer.mglo))
    tp.pipe(memoryview(buffer.mglo), fileno)
tp.sync(memoryview(buffer.mglo))
ffmpeg.stdin.close()
ffmpeg.wait()
print(time.perf_counter() - t0)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    proc, d = harness.start_xvfb(640, 480)
    env = dict(os.environ, DISPLAY=d)
    load0 = os.getloadavg()[0]
    times: dict[str, list[float]] = {"turbopipe": [], "framebus.turbopipe": []}
    try:
        for _ in range(a.repeats):
            for mod, ts in times.items():
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, mod, str(a.frames)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                ts.append(float(out.stdout.split()[-1]))
    finally:
        proc.terminate()
        proc.wait()
    fps = {m: a.frames / statistics.median(ts) for m, ts in times.items()}
    base = fps["turbopipe"]
    rows = [
        [m, round(fps[m], 1), round(fps[m] / base, 2), [round(a.frames / t) for t in ts]]
        for m, ts in times.items()
    ]
    harness.report(
        "turbopipe_example",
        "TurboPipe's examples/ffmpeg.py (1080p rgb24, one moderngl buffer, -f null)",
        ["module", "fps (median)", "x turbopipe", "fps per run"],
        rows,
        notes=f"Load average (1 min) {load0:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"{a.repeats} alternating runs of {a.frames} frames.",
    )


if __name__ == "__main__":
    main()
