"""The ScreenCast portal path, benchmarked on its own: headless sway 1.7 at 1920x1080
showing a known pattern, the portal stack of tests/portal_env.py (PipeWire 0.3.65,
WirePlumber, xdg-desktop-portal 1.16, xdg-desktop-portal-wlr 0.7), and framebus's portal
backend driven by ``examples/portal_grab.rs`` built with ``--release`` (the Rust API,
no Python in the timed loop). Per frame, every case reads every byte once (a uint64 sum):

  portal zero-copy  PortalSource::grab(): the newest PipeWire buffer itself (a foreign
                    slot) + the sum
  portal copy       a region one row short of the stream: one copy into a pool slot
                    (the path past the producer's spare buffers, and for regions) + the sum
  limit             one memcpy of a same-size BGRA frame + the sum (NumPy)
  grim              ``grim -t ppm -`` per frame through a pipe + the sum (what users run)

A portal grab returns the newest frame the stream delivered (it does not ask the
compositor for a new one), so on a still screen it measures framebus alone. Also reported:
open → first frame (D-Bus session, PipeWire connection, negotiation, first buffer) of a
fresh portal, from the program's start.

Medians of --repeats runs of --frames grabs; JSON lines go to bench/results/portal.jsonl.

Usage: python bench/bench_portal.py [--repeats 5] [--frames 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import harness
import portal_env
from wayland import Sway, pattern_rgb

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "portal.jsonl"


def u64sum(a: np.ndarray) -> int:
    return int(a.reshape(-1).view(np.uint64).sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--refresh", type=int, default=1000, help="output refresh, Hz")
    ap.add_argument("--bin", default=os.environ.get("FRAMEBUS_PORTAL_GRAB"))
    a = ap.parse_args()
    grab = Path(a.bin) if a.bin else ROOT / "target/release/examples/portal_grab"
    if not a.bin:
        subprocess.run(
            ["cargo", "build", "-q", "--release", "-p", "framebus-capture"]
            + ["--example", "portal_grab"],
            cwd=ROOT,
            check=True,
        )
    w, h = 1920, 1080
    load_before = os.getloadavg()[0]
    with Sway(w, h, refresh=a.refresh) as sway, tempfile.TemporaryDirectory() as tmp:
        picture = pattern_rgb(0, 0, w, h)
        sway.show_image(sway.output, picture)
        with portal_env.PortalStack(sway, output=sway.output) as stack:
            out = Path(tmp) / "frame"
            r = subprocess.run(
                [str(grab), str(out), "--frames", str(a.frames), "--repeats", str(a.repeats)],
                env=stack.env,
                capture_output=True,
                timeout=600,
            )
            if r.returncode != 0:
                sys.exit(f"portal_grab failed: {r.stderr.decode()}\n{stack.log('xdpw')}")
            info = json.loads(r.stdout.decode().strip().splitlines()[-1])
            got = np.frombuffer(out.with_suffix(".bgra").read_bytes(), np.uint8)
            np.testing.assert_array_equal(got.reshape(h, w, 4)[..., [2, 1, 0]], picture)
        src = np.zeros((h, w, 4), np.uint8)
        src[..., :3] = picture
        dst = np.empty_like(src)
        env = sway.env

        def limit():
            np.copyto(dst, src)
            return u64sum(dst)

        def grim():
            ppm = subprocess.run(
                ["grim", "-t", "ppm", "-"], env=env, stdout=subprocess.PIPE, check=True
            ).stdout
            return u64sum(np.frombuffer(ppm, np.uint8)[len(ppm) - w * h * 3 :])

        per = harness.alternate({"limit": limit}, a.frames, a.repeats)
        per.update(harness.alternate({"grim": grim}, max(5, a.frames // 10), a.repeats))
    med = {
        "portal zero-copy": info["grab_us"] / 1e6,
        "portal copy": info["copy_us"] / 1e6,
        "limit (memcpy)": harness.median(per["limit"]),
        "grim -t ppm -": harness.median(per["grim"]),
    }
    lim, grim_s = med["limit (memcpy)"], med["grim -t ppm -"]
    rows = [[name, t * 1e3, 1 / t, t / lim, grim_s / t] for name, t in med.items()]
    load = (
        f"Load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
        f"on {os.cpu_count()} CPUs."
    )
    harness.report(
        "bench_portal",
        "ScreenCast portal at 1080p: grab + uint64 sum of every byte (medians)",
        ["case", "ms/frame", "frames/s", "x limit time", "x grim fps"],
        rows,
        notes=f"Open to first frame (fresh portal): {info['open_ms']:.0f} ms. "
        f"{info['buffers']} PipeWire buffers. Headless sway (pixman) at {a.refresh} Hz; "
        f"xdg-desktop-portal-wlr through tests/wl_dmabuf_shim.py. {load}",
    )
    machine = harness.machine()
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    base = {"feature": "portal", "res": "1080p", "framebus": "framebus", "unit": "ms/frame"}
    lines = [
        dict(base, case=f"{name} + sum vs memcpy", anchor="memcpy + sum", better="lower",
             framebus_value=round(med[name] * 1e3, 3), anchor_value=round(lim * 1e3, 3),
             ratio=round(lim / med[name], 3))
        for name in ("portal zero-copy", "portal copy")
    ] + [
        dict(base, case="portal zero-copy + sum vs grim", anchor="grim -t ppm - (pipe)",
             better="lower", framebus_value=round(med["portal zero-copy"] * 1e3, 3),
             anchor_value=round(grim_s * 1e3, 3), ratio=round(grim_s / med["portal zero-copy"], 2)),
        dict(base, case="open to first frame", anchor="", better="lower", unit="ms",
             framebus_value=info["open_ms"], anchor_value=None, ratio=None),
    ]  # fmt: skip
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        for line in lines:
            line.update(
                date=machine["date"],
                time=time.strftime("%H:%M UTC", time.gmtime()),
                command=cmd,
                versions=f"Python {machine['python']}",
                source="docs/benchmarks.md: ScreenCast portal",
            )
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
