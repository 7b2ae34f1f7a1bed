"""Incremental capture benchmark: framebus incremental vs framebus full grab vs mss
(mss 10.2 on Python ≤ 3.11, mss main 11.0.0.dev0 on Python 3.12: its zero-copy XShm
path), at 1080p and 4K, with a still screen, 5 % and 100 % of the screen changing.

Per frame, a change is made (not timed): "5%" scrolls a w/4 x h/5 area (5 % of the
screen, a window scrolling its contents) at a random place by one row; "100%" scrolls
the whole screen by one row; "still" changes nothing. Then every case grabs that same screen once, timed (the order rotates frame by frame,
so each grabber sees exactly one change per grab and slow phases of a noisy machine hit
every case alike):

  framebus incremental + read          Grabber(incremental=True).grab(), read every byte
  framebus incremental + read damage   the same grab, read only ``frame.damage``
  framebus full + read                 Grabber().grab(), read every byte
  mss X + read                         mss.MSS(backend="xshmgetimage").grab(mon), read .bgra
  framebus incremental / full, no read the grabs alone (what the capture itself costs)

"read every byte" is a uint64-view sum of the whole frame (as bench_capture.py);
"read damage" sums only the changed rectangles (what a consumer that uses the damage,
e.g. an encoder or a diff, reads). The figure is the median over ``--repeats`` repeats of
the per-repeat median time per frame (``--frames`` frames each). Usage:

    python bench/bench_incremental.py [--res 1920x1080,3840x2160] [--repeats 5] [--frames 40]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
from framebus import FramePool, _framebus
from framebus.capture import Grabber


def u64sum(a) -> int:
    return int(np.asarray(a).reshape(-1).view(np.uint64).sum())


def damage_sum(a: np.ndarray, damage) -> int:
    s = 0
    for left, top, width, height in damage:
        # Each BGRA pixel as one uint32 (a uint8 sum would cost 4x as much).
        px = a[top : top + height, left : left + width].view(np.uint32)
        s += int(px.sum(dtype=np.uint64))
    return s


def mss_case(d: str) -> tuple[str, Callable[[], object]] | None:
    try:
        import mss as real_mss

        sct = real_mss.MSS(display=d, backend="xshmgetimage")
        mon = sct.monitors[0]
    except Exception as e:  # noqa: BLE001 - optional comparison
        print(f"mss not measured: {e}", file=sys.stderr)
        return None
    # mss 11 deprecates .raw for .bgra (a memoryview over its XShm slot on 3.12+).
    attr = "bgra" if hasattr(real_mss.screenshot.ScreenShot, "bgra") else "raw"
    return (
        f"mss {real_mss.__version__} xshm + read",
        lambda: u64sum(np.frombuffer(getattr(sct.grab(mon), attr), np.uint8)),
    )


def measure(w: int, h: int, repeats: int, frames: int, rows: list[list[object]]) -> None:
    proc, d = harness.start_xvfb(w, h)
    try:
        rng = random.Random(1)
        _framebus._test_put_image(d, 0, 0, w, h, rng.randbytes(w * h * 4))
        # One grabber per case (each must see one change per grab), each with a
        # pool of its own (as an incremental grabber has): a full grabber sharing
        # the default pool with another would find its slot warm in the cache.
        inc = Grabber(d, incremental=True)
        inc2 = Grabber(d, incremental=True)
        full = Grabber(d, pool=FramePool())

        def inc_read_damage() -> int:
            f = inc2.grab()
            return damage_sum(np.asarray(f), f.damage)

        cases: dict[str, Callable[[], object]] = {
            "framebus incremental + read": lambda: u64sum(inc.grab()),
            "framebus incremental + read damage": inc_read_damage,
            "framebus full + read": lambda: u64sum(full.grab()),
        }
        inc3, full3 = Grabber(d, incremental=True), Grabber(d, pool=FramePool())
        cases["framebus incremental, no read"] = inc3.grab
        cases["framebus full, no read"] = full3.grab
        m = mss_case(d)
        if m:
            cases[m[0]] = m[1]
        cw, ch = w // 4, h // 5

        def change_5() -> None:
            x0, y0 = rng.randrange(0, w - cw), rng.randrange(0, h - ch)
            _framebus._test_copy_area(d, x0, y0 + 1, cw, ch - 1, x0, y0)

        def change_100() -> None:
            _framebus._test_copy_area(d, 0, 1, w, h - 1, 0, 0)

        changes = {"still": lambda: None, "5%": change_5, "100%": change_100}
        for label, change in changes.items():
            per_case: dict[str, list[float]] = {k: [] for k in cases}
            names = list(cases)
            for r in range(repeats):
                print(f"  {w}x{h} {label} repeat {r + 1}/{repeats}", file=sys.stderr)
                change()
                for fn in cases.values():
                    fn()  # settle (the first grab of a slot is full)
                ts: dict[str, list[float]] = {k: [] for k in cases}
                for i in range(frames):
                    # One change per frame, then every case grabs it (so each
                    # grabber sees exactly one change since its last grab), in
                    # a rotating order: slow phases of the machine hit all alike.
                    change()
                    for name in names[i % len(names) :] + names[: i % len(names)]:
                        t0 = time.perf_counter()
                        cases[name]()
                        ts[name].append(time.perf_counter() - t0)
                for k, v in ts.items():
                    per_case[k].append(statistics.median(v))
            med = {k: statistics.median(v) for k, v in per_case.items()}
            base_full = med["framebus full + read"]
            base_mss = med[m[0]] if m else None
            for k, t in med.items():
                rows.append(
                    [
                        f"{w}x{h}",
                        label,
                        k,
                        round(t * 1e3, 2),
                        round(1 / t, 1),
                        round(base_full / t, 2),
                        round(base_mss / t, 2) if base_mss else "-",
                    ]
                )
        print(
            f"  {w}x{h} partial/full grabs of the incremental grabbers: "
            f"{inc.grab_counts} {inc2.grab_counts} {inc3.grab_counts}",
            file=sys.stderr,
        )
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", default="1920x1080,3840x2160")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=40)
    a = ap.parse_args()
    rows: list[list[object]] = []
    load0 = os.getloadavg()[0]
    for res in a.res.split(","):
        w, h = map(int, res.split("x"))
        measure(w, h, a.repeats, a.frames, rows)
    load1 = os.getloadavg()[0]
    harness.report(
        f"incremental-py{sys.version_info[0]}{sys.version_info[1]}",
        f"Incremental capture (Python {sys.version_info[0]}.{sys.version_info[1]})",
        ["screen", "changing", "case", "ms/frame", "fps", "x full", "x mss"],
        rows,
        notes=f"Load average (1 min) {load0:.2f} before, {load1:.2f} after. "
        f"{a.repeats} alternating repeats x {a.frames} frames, medians.",
    )


if __name__ == "__main__":
    main()
