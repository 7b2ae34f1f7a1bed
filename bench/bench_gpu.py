"""GPU benchmark (issue #16): a frame in a pinned pool slot → a CUDA float32
CHW RGB tensor normalised with mean/std, at 1080p and 4K, three ways in the
same run (medians of interleaved repeats):

  framebus       frame.to_device(format="RGB_F32_CHW", mean=, std=) → torch.from_dlpack
  mss to_torch   mss main's ScreenShot.to_torch(device="cuda") on the same pixels
                 (the wheel in ../shared/anchors/, skipped when absent)
  torch by hand  torch.from_numpy(np.asarray(frame)).cuda() → [..., [2, 1, 0]]
                 .permute(2, 0, 1).float() / 255 → (x - mean) / std

Also framebus's fused resize (to 640x360 CHW) and NV12 uploads, for reference.
Each case ends with torch.cuda.synchronize(), so a figure is the end-to-end time
of one frame (latency p50/p99 reported besides frames/s). Upload bandwidth:
framebus's plain to_device of a pinned slot vs torch copying a pin_memory()'d
tensor of the same size (non_blocking=True + synchronize).

Needs an NVIDIA GPU, torch (CUDA) and framebus; writes JSON lines to
``--out`` (default bench/results/gpu.jsonl) and a table to stdout. No figure of
this benchmark was measured in the session that wrote it (no GPU there).

    python bench/bench_gpu.py --out results/gpu.jsonl [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import framebus
import framebus.cuda as fcuda
import numpy as np

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RES = {"1080p": (1920, 1080), "4K": (3840, 2160)}


def timed(fn, n: int) -> list[float]:
    fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "fps": 1.0 / statistics.median(s),
        "p50_ms": 1e3 * statistics.median(s),
        "p99_ms": 1e3 * s[min(len(s) - 1, int(0.99 * len(s)))],
    }


def mss_to_torch(frame, torch):
    """mss main's to_torch(device="cuda") on this frame's pixels, or None."""
    try:
        from mss.screenshot import ScreenShot
    except ImportError:
        return None
    if not hasattr(ScreenShot, "to_torch"):
        return None
    w, h = frame.width, frame.height
    raw = bytearray(np.asarray(frame).tobytes())
    mon = {"left": 0, "top": 0, "width": w, "height": h}

    def run():
        shot = ScreenShot(raw, mon)
        t = shot.to_torch(device="cuda")
        t = t.float() / 255 if t.dtype == torch.uint8 else t
        return t

    return run


def one_resolution(res, w, h, n, repeats, pool, dpool, mean, std, info, torch, rows):
    f = pool.acquire(w, h, "BGRA")
    np.asarray(f)[...] = np.random.default_rng(0).integers(0, 256, (h, w, 4), np.uint8)

    def fb():
        t = torch.from_dlpack(f.to_device(format="RGB_F32_CHW", mean=MEAN, std=STD, pool=dpool))
        torch.cuda.synchronize()
        return t

    def by_hand():
        x = torch.from_numpy(np.asarray(f)).cuda()
        t = (x[..., [2, 1, 0]].permute(2, 0, 1).float() / 255 - mean) / std
        torch.cuda.synchronize()
        return t

    def fb_resized():
        cf = f.to_device(format="RGB_F32_CHW", mean=MEAN, std=STD, size=(640, 360), pool=dpool)
        t = torch.from_dlpack(cf)
        torch.cuda.synchronize()
        return t

    def fb_nv12():
        t = torch.from_dlpack(f.to_device(format="NV12", pool=dpool))
        torch.cuda.synchronize()
        return t

    cases = {
        "framebus": fb,
        "torch by hand": by_hand,
        "framebus 640x360 CHW": fb_resized,
        "framebus NV12": fb_nv12,
    }
    m = mss_to_torch(f, torch)
    if m is not None:
        cases["mss to_torch"] = lambda: (m(), torch.cuda.synchronize())
    samples = {k: [] for k in cases}
    for _ in range(repeats):
        for k, fn in cases.items():
            samples[k] += timed(fn, n)
    # upload bandwidth
    nbytes = f.nbytes
    pinned = torch.empty(nbytes, dtype=torch.uint8).pin_memory()
    dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda")

    def fb_upload():
        f.to_device(pool=dpool).synchronize()

    def torch_upload():
        dev.copy_(pinned, non_blocking=True)
        torch.cuda.synchronize()

    up = {"framebus upload": timed(fb_upload, n), "torch pinned upload": timed(torch_upload, n)}
    for k, s in list(samples.items()) + list(up.items()):
        row = {"res": res, "case": k, **summary(s)}
        if k in up:
            row["GB/s"] = nbytes / statistics.median(s) / 1e9
        row.update(
            gpu=info["name"],
            driver=info["driver_version"],
            torch=torch.__version__,
            framebus=framebus.__version__,
            date=time.strftime("%Y-%m-%d"),
        )
        rows.append(row)
        print(
            f"{res:6} {k:22} {row['fps']:9.1f} fps  p50 {row['p50_ms']:7.3f} ms  "
            f"p99 {row['p99_ms']:7.3f} ms" + (f"  {row['GB/s']:.2f} GB/s" if "GB/s" in row else "")
        )
    fbm = statistics.median(samples["framebus"])
    if "mss to_torch" in samples:
        print(
            f"{res}: framebus / mss to_torch = {statistics.median(samples['mss to_torch']) / fbm:.2f}x"
        )
    print(
        f"{res}: framebus upload = "
        f"{statistics.median(up['torch pinned upload']) / statistics.median(up['framebus upload']):.0%}"
        " of torch's pinned bandwidth"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu.jsonl"))
    ap.add_argument("--quick", action="store_true", help="fewer frames (a smoke run)")
    args = ap.parse_args()
    import torch

    if not fcuda.is_available() or not torch.cuda.is_available():
        print(f"no GPU: {fcuda.unavailable_reason()}", file=sys.stderr)
        return 2
    n, repeats = (30, 2) if args.quick else (200, 5)
    info = fcuda.device_info(0)
    mean = torch.tensor(MEAN, device="cuda").view(3, 1, 1)
    std = torch.tensor(STD, device="cuda").view(3, 1, 1)
    pool = framebus.FramePool(pinned="cuda:0")
    dpool = fcuda.DevicePool()
    rows: list[dict] = []
    for res, (w, h) in RES.items():
        one_resolution(res, w, h, n, repeats, pool, dpool, mean, std, info, torch, rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
