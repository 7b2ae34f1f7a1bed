"""Wayland capture benchmark under headless sway 1.7 (tests/wayland.py), a fresh sway
per size, at 1920x1080 and 3840x2160, showing a known pattern (through swaybg).

Per frame, every case reads every byte once with a uint64-view sum, as
bench_capture.py:

  framebus   Grabber.grab() (wlr-screencopy into a pool slot) + zero-copy sum
  limit      one memcpy of a same-size BGRA frame (np.copyto: the compositor copies
             its buffer once, at least) + the same sum        target: framebus <= 1.5x
  grim       ``grim -t ppm -`` per frame, read through a pipe, + the sum of its pixels
             (what users run today)              target: framebus >= 10x its frames/s

The output runs at --refresh Hz (default 1000): wlr-screencopy hands over the next
frame the compositor renders, so at 60 Hz every capture path would measure the frame
clock (16.7 ms), not itself. The same clock serves framebus and grim.

Continuous capture: a consumer spending one grab's time per frame (u64 sum, then a spin
up to the measured median grab time), fed by ``serial`` grab-then-consume in one loop or
by ``Capture(target_fps=None).latest()`` on its Rust thread.

Medians of alternating repeats (bench/harness.py); each case's figure is also written as
a JSON line into bench/results/wayland.jsonl (the format of current.jsonl).

Usage: python bench/bench_wayland.py [--res 1080p,4K] [--repeats 5] [--refresh 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import framebus
import harness
from framebus.capture import Capture, Grabber
from wayland import Sway, pattern_rgb

RES = {"1080p": (1920, 1080), "4K": (3840, 2160)}
RESULTS = Path(__file__).resolve().parent / "results" / "wayland.jsonl"


def u64sum(a: np.ndarray) -> int:
    return int(a.reshape(-1).view(np.uint64).sum())


def tool_version(cmd: list[str], package: str) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        text = (out.stdout + out.stderr).strip()
        if text and "version" in text:
            return text.split()[-1]
    except OSError:
        pass
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True
    )
    return out.stdout.strip() or "?"


def timed(cases: dict, frames: dict, repeats: int) -> dict[str, float]:
    """Seconds per op, median of alternating repeats (each case its own op count)."""
    per: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(repeats):
        for name, fn in cases.items():
            print(f"  repeat {r + 1}/{repeats}: {name}", file=sys.stderr, flush=True)
            per[name].append(harness.per_op_seconds(fn, frames[name]))
    return {k: harness.median(v) for k, v in per.items()}


def grab_cases(sway: Sway, w: int, h: int, frames: int, repeats: int):
    pool = framebus.FramePool()
    g = Grabber(sway.socket, pool=pool)
    backend, reason = g.backend, g.backend_reason
    first = g.grab()
    src = np.array(first)
    first.release()
    # framebus, grim and the picture shown agree, pixel for pixel.
    np.testing.assert_array_equal(src[..., [2, 1, 0]], sway.grim())
    np.testing.assert_array_equal(src[..., [2, 1, 0]], pattern_rgb(0, 0, w, h))
    dst = np.empty_like(src)
    grim_cmd = ["grim", "-t", "ppm", "-"]
    env = sway.env

    def fb():
        f = g.grab()
        s = u64sum(np.asarray(f))
        f.release()
        return s

    def limit():
        np.copyto(dst, src)
        return u64sum(dst)

    def grim():
        out = subprocess.run(grim_cmd, env=env, stdout=subprocess.PIPE, check=True).stdout
        body = np.frombuffer(out, np.uint8)[len(out) - w * h * 3 :]
        return u64sum(body)

    assert fb() == limit() == u64sum(src)
    assert grim() == u64sum(sway.grim())
    cases = {"framebus": fb, "limit": limit, "grim -t ppm -": grim}
    counts = {"framebus": frames, "limit": frames, "grim -t ppm -": max(5, frames // 10)}
    med = timed(cases, counts, repeats)
    rss = harness.rss_bytes()
    pool_bytes = pool.stats()["bytes_mapped"]
    g.close()
    return med, rss, pool_bytes, backend, reason


def continuous_cases(sway: Sway, frames: int, repeats: int):
    pool = framebus.FramePool()
    g = Grabber(sway.socket, pool=pool)
    singles = []
    for _ in range(max(30, frames // 2)):
        t0 = time.perf_counter()
        g.grab().release()
        singles.append(time.perf_counter() - t0)
    work_s = harness.median(singles)

    def consume(f) -> None:
        t_end = time.perf_counter() + work_s
        u64sum(np.asarray(f))
        while time.perf_counter() < t_end:
            pass

    def serial() -> float:
        t0 = time.perf_counter()
        for _ in range(frames):
            f = g.grab()
            consume(f)
            f.release()
        return frames / (time.perf_counter() - t0)

    cap = Capture(target_fps=None, buffer=3, pool=framebus.FramePool(), display=sway.socket)
    cap.latest(timeout=10).release()

    def continuous() -> tuple[float, int]:
        d0 = cap.dropped
        t0 = time.perf_counter()
        last = 0
        for _ in range(frames):
            f = cap.latest(timeout=10)
            assert f.seq > last
            last = f.seq
            consume(f)
            f.release()
        return frames / (time.perf_counter() - t0), cap.dropped - d0

    s_fps, c_fps, drops = [], [], []
    for r in range(repeats):
        print(f"  repeat {r + 1}/{repeats}: serial, Capture.latest", file=sys.stderr, flush=True)
        s_fps.append(serial())
        fps, d = continuous()
        c_fps.append(fps)
        drops.append(d)
    cap.stop()
    g.close()
    return work_s, harness.median(s_fps), harness.median(c_fps), harness.median(drops)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", default="1080p,4K")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--refresh", type=int, default=1000, help="output refresh, Hz")
    ap.add_argument(
        "--frames", type=int, default=0, help="frames per repeat (default 100 at 1080p, 30 at 4K)"
    )
    a = ap.parse_args()
    versions = (
        f"sway {tool_version(['sway', '--version'], 'sway')}, "
        f"grim {tool_version(['grim', '-h'], 'grim')}"
    )
    rows, crow, lines = [], [], []
    load_before = os.getloadavg()[0]
    backend = reason = None
    for res in a.res.split(","):
        w, h = RES[res]
        frames = a.frames or (100 if res == "1080p" else 30)
        print(f"== {res}: headless sway {w}x{h}@{a.refresh}Hz", file=sys.stderr, flush=True)
        with Sway(w, h, refresh=a.refresh) as sway:
            sway.show_image(sway.output, pattern_rgb(0, 0, w, h))
            med, rss, pool_bytes, backend, reason = grab_cases(sway, w, h, frames, a.repeats)
            lim, grim = med["limit"], med["grim -t ppm -"]
            for name, t in med.items():
                rows.append(
                    [res, name, t * 1e3, 1 / t, t / lim, grim / t, f"{rss / (1 << 20):.0f}"]
                )
            work, s_fps, c_fps, drops = continuous_cases(sway, frames, a.repeats)
            crow.append([res, work * 1e3, s_fps, c_fps, c_fps / s_fps, drops])
        fb = med["framebus"]
        base = {"feature": "wayland", "res": res, "framebus": "framebus", "unit": "ms/frame"}
        lines += [
            dict(base, case="grab + sum vs memcpy", anchor="memcpy + sum", better="lower",
                 framebus_value=round(fb * 1e3, 3), anchor_value=round(lim * 1e3, 3),
                 ratio=round(lim / fb, 3)),
            dict(base, case="grab + sum vs grim", anchor="grim -t ppm - (pipe)",
                 better="lower", framebus_value=round(fb * 1e3, 3),
                 anchor_value=round(grim * 1e3, 3), ratio=round(grim / fb, 2)),
            dict(base, case="Capture.latest vs serial", anchor="serial grab + consume",
                 unit="frames/s", better="higher", framebus_value=round(c_fps, 1),
                 anchor_value=round(s_fps, 1), ratio=round(c_fps / s_fps, 3)),
        ]  # fmt: skip
    load = (
        f"Load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
        f"on {os.cpu_count()} CPUs."
    )
    setting = (
        f"Headless sway (pixman), outputs at {a.refresh} Hz; {versions}; backend "
        f"{backend} ({reason or 'first choice'})."
    )
    harness.report(
        "bench_wayland",
        "Wayland capture: grab + uint64 sum of every byte (median of alternating repeats)",
        ["res", "case", "ms/frame", "frames/s", "x limit time", "x grim fps", "RSS MiB"],
        rows,
        notes=f"Targets: framebus <= 1.5x the limit's time, >= 10x grim's frames/s. "
        f"{setting} {load}",
    )
    harness.report(
        "bench_wayland_continuous",
        "Wayland continuous capture: consumer spending one grab's time per frame",
        ["res", "consumer ms/frame", "serial fps", "Capture.latest fps", "ratio", "dropped"],
        crow,
        notes=f"{setting} {load}",
    )
    info = harness.machine()
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        for line in lines:
            line.update(
                date=info["date"],
                time=time.strftime("%H:%M UTC", time.gmtime()),
                command=cmd,
                versions=f"{versions}, Python {info['python']}",
                source="docs/benchmarks.md: Wayland capture",
            )
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
