"""Frames into an FFmpeg subprocess: TurboPipe's own comparison, reproduced in one run.

For each pixel format (rgb24 as in TurboPipe's benchmark, and bgra: what screen capture
gives), each resolution (720p, 1080p, 4K) and each sink, the same NBUF=4 rotating, pre-filled NumPy frames are sent by:

  write      proc.stdin.write(frame) on the main thread (no copy, buffer protocol)
  thread     a Python writer thread fed by queue.Queue(maxsize=NBUF-2)
  turbopipe  turbopipe 2.x from PyPI: sync(frame) before reuse, pipe(frame, fd)
  framebus   framebus.pipe / framebus.sync, same pattern (zero-copy, export held; write(2))
  framebus+splice  the same with splice=True: pages vmspliced into the pipe, each
             buffer released when the reader has read it (VideoWriter's default)
  raw        the raw pipe limit: a small C program (bench/pipe_raw.c, built here with
             gcc) write()s the same bytes from 4 rotating buffers straight into the
             sink's stdin: no Python at all

Every method gets the pipe as `subprocess` makes it (64 KiB); turbopipe is also run
on a pipe grown to /proc/sys/fs/pipe-max-size (turbopipe+1M), its best case.
framebus and raw grow the pipe themselves (F_SETPIPE_SZ).

Sinks: null = ffmpeg -f rawvideo ... -i - -f null - ; cat = sh -c 'cat > /dev/null' ;
x264 = ffmpeg ... -c:v libx264 -preset ultrafast -f null - (X264_FRAMES frames, ~3 s here).
Time: first write -> sink exit. GB/s = 1e9 bytes of frame data per second; median of
--repeats runs; methods alternate within each repeat (the 2-core VM is noisy).

Usage: python bench/bench_pipe.py [--res 720p,1080p,4k] [--sinks null,x264,cat]
       [--formats rgb24,bgra]
       [--methods write,thread,turbopipe,turbopipe+1M,framebus,framebus+splice,raw]
       [--gib 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import framebus
from framebus import _framebus as fb
from harness import report

try:
    import turbopipe
except ImportError:  # the bench still runs; the turbopipe rows say so
    turbopipe = None

RES = {"720p": (1280, 720), "1080p": (1920, 1080), "4k": (3840, 2160)}
NBUF = 4
F_SETPIPE_SZ = 1031
X264_FRAMES = {"720p": 240, "1080p": 120, "4k": 24}  # frames per x264 run (~3 s here)


def pipe_max() -> int:
    with open("/proc/sys/fs/pipe-max-size") as f:
        return int(f.read())


CHANNELS = {"rgb24": 3, "bgra": 4}


def sink_cmd(sink: str, w: int, h: int, pix_fmt: str) -> list[str]:
    if sink == "cat":
        return ["sh", "-c", "cat > /dev/null"]
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        pix_fmt,
        "-s",
        f"{w}x{h}",
        "-r",
        "60",
        "-i",
        "-",
    ]
    if sink == "x264":
        cmd += ["-c:v", "libx264", "-preset", "ultrafast"]
    return cmd + ["-f", "null", "-"]


def build_raw() -> str | None:
    if shutil.which("gcc") is None:
        return None
    exe = os.path.join(tempfile.mkdtemp(prefix="framebus-bench-"), "pipe_raw")
    src = Path(__file__).resolve().parent / "pipe_raw.c"
    subprocess.run(["gcc", "-O2", "-o", exe, str(src)], check=True)
    return exe


def cpu_seconds(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def one_run(method: str, frames: list[np.ndarray], n: int, cmd: list[str], raw_exe: str | None):
    """Seconds from the first write to the sink's exit, and CPU seconds of this
    process (all its threads) and of the children (sink, and the raw writer)."""
    fbytes = frames[0].nbytes
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    fd = proc.stdin.fileno()
    if method == "turbopipe+1M":
        fcntl.fcntl(fd, F_SETPIPE_SZ, pipe_max())
    if method == "raw":
        w = subprocess.Popen(
            [raw_exe, str(fbytes), str(n), str(pipe_max())],
            stdin=subprocess.PIPE,
            stdout=proc.stdin,
        )
    time.sleep(0.2)  # let the sink (and the raw writer) start before the clock does
    c_self, c_child = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    if method == "write":
        for i in range(n):
            proc.stdin.write(frames[i % NBUF])
    elif method == "thread":
        q: queue.Queue = queue.Queue(maxsize=NBUF - 2)

        def worker():
            while (item := q.get()) is not None:
                proc.stdin.write(item)

        th = threading.Thread(target=worker, daemon=True)
        th.start()
        for i in range(n):
            q.put(frames[i % NBUF])
        q.put(None)
        th.join()
    elif method.startswith("turbopipe"):
        for i in range(n):
            obj = frames[i % NBUF]
            turbopipe.sync(obj)  # the previous write of this buffer must be done before reuse
            turbopipe.pipe(obj, fd)
        for obj in frames:
            turbopipe.sync(obj)
    elif method.startswith("framebus"):
        splice = method == "framebus+splice"
        for i in range(n):
            obj = frames[i % NBUF]
            fb.sync(obj)
            fb.pipe(obj, fd, splice=splice)
        fb.close(fd)  # flush and stop the writer before the fd is closed
    elif method == "raw":
        w.stdin.write(b"g")  # go
        w.stdin.close()
        if w.wait() != 0:
            raise RuntimeError("pipe_raw failed")
    proc.stdin.close()
    rc = proc.wait()
    dt = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"{cmd[0]} exited {rc}")
    return (
        dt,
        cpu_seconds(resource.RUSAGE_SELF) - c_self,
        cpu_seconds(resource.RUSAGE_CHILDREN) - c_child,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--res", default="720p,1080p,4k")
    ap.add_argument("--sinks", default="null,x264,cat")
    ap.add_argument("--formats", default="rgb24,bgra")
    ap.add_argument(
        "--methods", default="write,thread,turbopipe,turbopipe+1M,framebus,framebus+splice,raw"
    )
    ap.add_argument("--gib", type=float, default=1.0, help="data per run (null and cat sinks)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    raw_exe = build_raw()
    methods = [
        m
        for m in a.methods.split(",")
        if not (m.startswith("turbopipe") and turbopipe is None)
        and not (m == "raw" and raw_exe is None)
    ]
    rows = []
    t_start = time.perf_counter()
    cases = [
        (sink, res, pix_fmt)
        for pix_fmt in a.formats.split(",")
        for sink in a.sinks.split(",")
        for res in a.res.split(",")
    ]
    for sink, res, pix_fmt in cases:
        w, h = RES[res]
        rng = np.random.default_rng(0)
        shape = (h, w, CHANNELS[pix_fmt])
        frames = [rng.integers(128, 135, shape, dtype=np.uint8) for _ in range(NBUF)]
        fbytes = frames[0].nbytes
        n = X264_FRAMES[res] if sink == "x264" else max(NBUF, int(a.gib * 2**30 / fbytes))
        cmd = sink_cmd(sink, w, h, pix_fmt)
        runs: dict[str, list[tuple[float, float, float]]] = {m: [] for m in methods}
        for m in methods:  # warm-up (page cache, ffmpeg binary, thread start)
            one_run(m, frames, max(NBUF, n // 10), cmd, raw_exe)
        for _ in range(a.repeats):
            for m in methods:
                runs[m].append(one_run(m, frames, n, cmd, raw_exe))
        gb = n * fbytes / 1e9
        times = {m: [r[0] for r in rs] for m, rs in runs.items()}
        gbps = {m: gb / statistics.median(t) for m, t in times.items()}
        for m in methods:
            med = sorted(runs[m])[len(runs[m]) // 2]
            row = [
                sink,
                res,
                pix_fmt,
                m,
                n,
                round(gbps[m], 2),
                round(n / statistics.median(times[m]), 1),
                round(gb / min(times[m]), 2),
                round(med[1] / gb, 2),
                round(med[2] / gb, 2),
            ]
            for ref in ("framebus", "framebus+splice"):
                row.append(round(gbps[ref] / gbps[m], 2) if ref in gbps else "")
            rows.append(row)
        print(
            f"# {sink} {res} {pix_fmt}: " + ", ".join(f"{m} {g:.2f}" for m, g in gbps.items()),
            flush=True,
        )
    notes = (
        f"GB/s = 1e9 bytes/s, median of {a.repeats} alternating runs (best in the next column); "
        "'fb ×' / 'fb+splice ×' = framebus's (framebus+splice's) median GB/s divided by that "
        "row's. CPU s/GB: CPU seconds per GB of frames of this process (all threads) and of "
        "the children (the sink; for raw also the C writer), median run. 4 rotating "
        f"NumPy buffers synced before reuse. Total time {time.perf_counter() - t_start:.0f} s. "
        f"turbopipe {getattr(turbopipe, '__version__', 'missing')}, framebus {framebus.__version__}."
    )
    report(
        "bench_pipe",
        "Frames into FFmpeg (bench_pipe.py)",
        [
            "sink",
            "res",
            "format",
            "method",
            "frames",
            "GB/s",
            "fps",
            "best GB/s",
            "CPU s/GB self",
            "CPU s/GB child",
            "fb ×",
            "fb+splice ×",
        ],
        rows,
        notes,
    )


if __name__ == "__main__":
    main()
