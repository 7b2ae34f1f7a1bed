"""Foundation benchmark: a frame cycle (get a frame → np.asarray → sum → let go)
with framebus's pool against what users do today, plus RSS under churn.

Cases, per frame:
  framebus       pool.acquire → np.asarray (zero-copy) → write a row → sum → release
  bytearray      bytearray(n) → np.frombuffer → write a row → sum        (fresh per frame)
  np.empty       np.empty(shape) → write a row → sum                     (fresh per frame)
  ctypes→bytes   bytes(ctypes buffer) → np.frombuffer → sum  (mss < 11: one copy per frame)
The sum reads every byte through a uint64 view (numpy's uint8 .sum() costs ~3 ms per
1080p frame and would hide everything else; see shared/README.md).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import framebus
import harness

RES = {"1080p": (1920, 1080), "4K": (3840, 2160)}


def cases(w: int, h: int) -> dict:
    n = w * h * 4
    pool = framebus.FramePool(max_bytes=1 << 30)
    src = (ctypes.c_ubyte * n)()  # stands in for an XImage's buffer

    def fb():
        f = pool.acquire(w, h, "BGRA")
        a = np.asarray(f)
        a[0] = 1
        s = a.reshape(-1).view(np.uint64).sum()
        del a
        f.release()
        return s

    def ba():
        b = bytearray(n)
        a = np.frombuffer(b, np.uint8)
        a[: w * 4] = 1
        return a.view(np.uint64).sum()

    def empty():
        a = np.empty((h, w, 4), np.uint8)
        a[0] = 1
        return a.reshape(-1).view(np.uint64).sum()

    def ctypes_bytes():
        b = bytes(src)
        return np.frombuffer(b, np.uint64).sum()

    return {"framebus": fb, "bytearray": ba, "np.empty": empty, "ctypes→bytes": ctypes_bytes}


def churn_rss(cycles: int, hold: int, w: int, h: int) -> tuple[int, int, dict]:
    """Acquire frames and release them in random order with up to `hold` alive."""
    pool = framebus.FramePool()
    rng = random.Random(1)
    held: list = []
    gc.collect()
    start = harness.rss_bytes()
    peak = start
    for i in range(cycles):
        f = pool.acquire(w, h, "BGRA")
        np.asarray(f)[0, :8] = i & 0xFF
        held.append(f)
        if len(held) > hold:
            held.pop(rng.randrange(len(held))).release()
        if i % 1000 == 0:
            peak = max(peak, harness.rss_bytes())
    for f in held:
        f.release()
    end = harness.rss_bytes()
    return start, max(peak, end), pool.stats()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--cycles", type=int, default=100_000)
    args = ap.parse_args()
    rows = []
    for label, (w, h) in RES.items():
        n = args.frames if label == "1080p" else max(10, args.frames // 4)
        res = harness.alternate(cases(w, h), n, args.repeats)
        fb = harness.median(res["framebus"])
        for name, xs in res.items():
            m = harness.median(xs)
            rows.append([label, name, m * 1e3, 1 / m, m / fb])
    harness.report(
        "pool_cycle",
        "Frame cycle: get a frame → NumPy → sum → let go",
        ["res", "method", "ms/frame (median)", "frames/s", "time vs framebus"],
        rows,
        notes=f"Median of {args.repeats} alternating repeats. `time vs framebus` > 1 means slower than framebus.",
    )
    start, peak, stats = churn_rss(args.cycles, 8, 640, 480)
    harness.report(
        "pool_rss",
        f"RSS over {args.cycles} acquire/release cycles, 640×480 BGRA, up to 8 frames held, released in random order",
        ["RSS before (MB)", "RSS peak (MB)", "growth (MB)", "slots mapped", "maps", "reuses"],
        [
            [
                start / 1e6,
                peak / 1e6,
                (peak - start) / 1e6,
                stats["slots"],
                stats["maps"],
                stats["reuses"],
            ]
        ],
    )


if __name__ == "__main__":
    main()
