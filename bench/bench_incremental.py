"""Incremental capture benchmark at 4K: framebus incremental vs framebus full grab vs
mss 10.2 (xshmgetimage), with 5 % and 100 % of the screen changing per frame.

Per frame, a change is made (not timed): "5%" scrolls a 960x432 area (5 % of 3840x2160,
a window scrolling its contents) at a random place by one row; "100%" scrolls the whole
screen by one row. Then one grab + read is timed:

  framebus incremental   Grabber(incremental=True).grab() + read
  framebus full          Grabber().grab() + read
  mss 10.2               mss.MSS(backend="xshmgetimage").grab(mon) + read of .raw

"read" is a uint64-view sum of every pixel (as bench_capture.py), and for the
incremental grabber also "read damage": the sum over ``frame.damage`` only (what a
consumer that uses the damage reads). Each case runs ``--frames`` frames per repeat;
cases alternate within each repeat; the figure is the median over repeats of the
per-repeat median time per frame. Usage:

    python bench/bench_incremental.py [--repeats 5] [--frames 40] [--res 3840x2160]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
from framebus import _framebus
from framebus.capture import Grabber


def u64sum(a: np.ndarray) -> int:
    return int(a.reshape(-1).view(np.uint64).sum())


def damage_sum(a: np.ndarray, damage) -> int:
    s = 0
    for left, top, width, height in damage:
        # Each BGRA pixel as one uint32 (a uint8 sum would cost 4x as much).
        px = a[top : top + height, left : left + width].view(np.uint32)
        s += int(px.sum(dtype=np.uint64))
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", default="3840x2160")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=40)
    a = ap.parse_args()
    w, h = map(int, a.res.split("x"))
    proc, d = harness.start_xvfb(w, h)
    try:
        rng = random.Random(1)
        noise = np.frombuffer(rng.randbytes(w * h * 4), np.uint8)
        _framebus._test_put_image(d, 0, 0, w, h, noise.tobytes())
        inc = Grabber(d, incremental=True)
        full = Grabber(d)
        cases = {
            "framebus incremental + read": lambda: u64sum(np.asarray(inc.grab())),
            "framebus incremental + read damage": lambda: (
                lambda f: damage_sum(np.asarray(f), f.damage)
            )(inc.grab()),
            "framebus full + read": lambda: u64sum(np.asarray(full.grab())),
        }
        try:
            import mss as real_mss

            sct = real_mss.MSS(display=d, backend="xshmgetimage")
            mon = sct.monitors[0]
            cases[f"mss {real_mss.__version__} xshmgetimage + read"] = lambda: int(
                np.frombuffer(sct.grab(mon).raw, np.uint64).sum()
            )
        except Exception as e:  # noqa: BLE001 - optional comparison
            print(f"mss not measured: {e}")
        cw, ch = w // 4, h // 5  # 960x432 at 4K: 5.0 %

        def change_5() -> None:
            x0, y0 = rng.randrange(0, w - cw), rng.randrange(0, h - ch)
            _framebus._test_copy_area(d, x0, y0 + 1, cw, ch - 1, x0, y0)

        def change_100() -> None:
            _framebus._test_copy_area(d, 0, 1, w, h - 1, 0, 0)

        load = os.getloadavg()
        print(f"Xvfb {w}x{h}, {a.repeats} repeats x {a.frames} frames, load {load[0]:.2f}")
        for label, change in (("5%", change_5), ("100%", change_100)):
            per_case: dict[str, list[float]] = {k: [] for k in cases}
            for _ in range(a.repeats):
                for name, fn in cases.items():
                    change()
                    fn()  # settle (the first grab of a slot is full)
                    ts = []
                    for _ in range(a.frames):
                        change()
                        t0 = time.perf_counter()
                        fn()
                        ts.append(time.perf_counter() - t0)
                    per_case[name].append(statistics.median(ts))
            med = {k: statistics.median(v) for k, v in per_case.items()}
            base_full = med["framebus full + read"]
            base_mss = next((v for k, v in med.items() if k.startswith("mss")), None)
            print(f"\n{label} of the screen changing per frame")
            print(f"{'case':40} {'ms/frame':>9} {'fps':>7} {'x full':>7} {'x mss':>7}")
            for k, t in med.items():
                xm = f"{base_mss / t:7.2f}" if base_mss else "      -"
                print(f"{k:40} {t * 1e3:9.2f} {1 / t:7.1f} {base_full / t:7.2f} {xm}")
        print(f"\npartial/full grabs of the incremental grabber: {inc.grab_counts}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
