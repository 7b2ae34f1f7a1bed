"""Benchmark: framebus pixel kernels vs NumPy, OpenCV and Pillow, in one run.

For 1080p and 4K BGRA frames it times BGRA->RGB, BGRA->GRAY, BGRA->I420 / NV12 and
the 4K->1080p resize, single-threaded (framebus threads=1, cv2.setNumThreads(1))
and multi-threaded (all cores), and reports each as GB/s of frame data moved
(bytes read + bytes written, 10^9/s) next to the memory-copy bandwidth measured in
the same run (numpy.copyto of the same frame: read + write).

Every case writes into a preallocated destination where the library allows it
(framebus out=, cv2 dst=, np.copyto), so allocation is not timed; Pillow always
allocates its result (that cost is part of its number). Median of repeats.

    python bench/bench_kernels.py [--repeats N] [--res 1080p,4k] [--markdown FILE]
"""

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
from framebus import _framebus as fb

try:
    import cv2
except ImportError:  # pragma: no cover - optional anchor
    cv2 = None
try:
    from PIL import Image
except ImportError:  # pragma: no cover - optional anchor
    Image = None

RES = {"1080p": (1920, 1080), "4k": (3840, 2160)}


def timeit(fn, repeats):
    fn()  # warm up (page faults, thread pools)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def numpy_gray(src, dst):
    s = src.astype(np.uint32)
    np.copyto(
        dst,
        ((9798 * s[..., 2] + 19234 * s[..., 1] + 3736 * s[..., 0] + 16384) >> 15).astype(np.uint8),
    )


def numpy_i420(src, dst):
    h, w = src.shape[:2]
    s = src.astype(np.int32)
    b, g, r = s[..., 0], s[..., 1], s[..., 2]
    dst[:h] = (8414 * r + 16519 * g + 3208 * b + (16 << 15) + (1 << 14)) >> 15
    sb = [c.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3)) for c in (r, g, b)]
    u = (-4856 * sb[0] - 9535 * sb[1] + 14392 * sb[2] + (128 << 17) + (1 << 16)) >> 17
    v = (14392 * sb[0] - 12051 * sb[1] - 2341 * sb[2] + (128 << 17) + (1 << 16)) >> 17
    dst[h:].reshape(-1)[:] = np.concatenate([u.reshape(-1), v.reshape(-1)])


def cases(w, h, src):
    """(operation, implementation, bytes moved, fn(threads_mode) -> callable or None)."""
    n = w * h
    rgb = np.empty((h, w, 3), np.uint8)
    gray = np.empty((h, w), np.uint8)
    yuv = np.empty((h * 3 // 2, w), np.uint8)
    copy = np.empty_like(src)
    out = []

    def add(op, impl, nbytes, make):
        out.append((op, impl, nbytes, make))

    add("copy (np.copyto)", "numpy", 8 * n, lambda mt: lambda: np.copyto(copy, src))
    # BGRA -> RGB
    b = 4 * n + 3 * n
    add(
        "BGRA->RGB",
        "framebus",
        b,
        lambda mt: lambda: fb.convert(src, "BGRA", "RGB", out=rgb, threads=None if mt else 1),
    )
    add(
        "BGRA->RGB",
        "numpy copyto(src[..., 2::-1])",
        b,
        lambda mt: None if mt else lambda: np.copyto(rgb, src[..., 2::-1]),
    )
    if cv2 is not None:
        add(
            "BGRA->RGB",
            "opencv cvtColor",
            b,
            lambda mt: lambda: cv2.cvtColor(src, cv2.COLOR_BGRA2RGB, dst=rgb),
        )
    if Image is not None:
        add(
            "BGRA->RGB",
            "pillow frombuffer BGRX",
            b,
            lambda mt: (
                None
                if mt
                else lambda: Image.frombuffer("RGB", (w, h), src, "raw", "BGRX", 0, 1).load()
            ),
        )
    # BGRA -> GRAY
    b = 4 * n + n
    add(
        "BGRA->GRAY",
        "framebus",
        b,
        lambda mt: lambda: fb.convert(src, "BGRA", "GRAY8", out=gray, threads=None if mt else 1),
    )
    add(
        "BGRA->GRAY",
        "numpy (int weights)",
        b,
        lambda mt: None if mt else lambda: numpy_gray(src, gray),
    )
    if cv2 is not None:
        add(
            "BGRA->GRAY",
            "opencv cvtColor",
            b,
            lambda mt: lambda: cv2.cvtColor(src, cv2.COLOR_BGRA2GRAY, dst=gray),
        )
    if Image is not None:
        add(
            "BGRA->GRAY",
            "pillow BGRX + convert('L')",
            b,
            lambda mt: (
                None
                if mt
                else lambda: Image.frombuffer("RGB", (w, h), src, "raw", "BGRX", 0, 1).convert("L")
            ),
        )
    # BGRA -> YUV 4:2:0
    b = 4 * n + n * 3 // 2
    add(
        "BGRA->I420",
        "framebus",
        b,
        lambda mt: lambda: fb.convert(src, "BGRA", "I420", out=yuv, threads=None if mt else 1),
    )
    add(
        "BGRA->NV12",
        "framebus",
        b,
        lambda mt: lambda: fb.convert(src, "BGRA", "NV12", out=yuv, threads=None if mt else 1),
    )
    add(
        "BGRA->I420",
        "numpy (int weights)",
        b,
        lambda mt: None if mt else lambda: numpy_i420(src, yuv),
    )
    if cv2 is not None:
        add(
            "BGRA->I420",
            "opencv cvtColor",
            b,
            lambda mt: lambda: cv2.cvtColor(src, cv2.COLOR_BGRA2YUV_I420, dst=yuv),
        )
    if Image is not None:
        # Pillow has no 4:2:0 output; YCbCr 4:4:4 is the closest it gets.
        add(
            "BGRA->I420",
            "pillow convert('YCbCr') (4:4:4)",
            b,
            lambda mt: (
                None
                if mt
                else lambda: Image.frombuffer("RGB", (w, h), src, "raw", "BGRX", 0, 1).convert(
                    "YCbCr"
                )
            ),
        )
    # resize to half size (4K -> 1080p, 1080p -> 540p)
    hw, hh = w // 2, h // 2
    small = np.empty((hh, hw, 4), np.uint8)
    small_rgb = np.empty((hh, hw, 3), np.uint8)
    b = 4 * n + 4 * hw * hh
    for method, cvm, pilm in [
        ("area", "INTER_AREA", "BOX"),
        ("bilinear", "INTER_LINEAR", "BILINEAR"),
    ]:
        op = f"resize /2 {method}"
        add(
            op,
            "framebus",
            b,
            lambda mt, m=method: (
                lambda: fb.resize(src, hw, hh, m, "BGRA", out=small, threads=None if mt else 1)
            ),
        )
        if cv2 is not None:
            add(
                op,
                "opencv resize",
                b,
                lambda mt, m=cvm: (
                    lambda: cv2.resize(src, (hw, hh), dst=small, interpolation=getattr(cv2, m))
                ),
            )
        if Image is not None:
            add(
                op,
                "pillow resize",
                b,
                lambda mt, m=pilm: (
                    None
                    if mt
                    else lambda: Image.frombuffer("RGBA", (w, h), src, "raw", "RGBA", 0, 1).resize(
                        (hw, hh), getattr(Image.Resampling, m)
                    )
                ),
            )
    add(
        "resize /2 area",
        "numpy reshape+sum",
        b,
        lambda mt: (
            None
            if mt
            else lambda: np.copyto(
                small,
                ((src.reshape(hh, 2, hw, 2, 4).sum(axis=(1, 3), dtype=np.uint16) + 2) >> 2).astype(
                    np.uint8
                ),
            )
        ),
    )
    b = 4 * n + 3 * hw * hh
    add(
        "resize /2 area -> RGB (fused)",
        "framebus",
        b,
        lambda mt: (
            lambda: fb.resize(
                src, hw, hh, "area", "BGRA", "RGB", out=small_rgb, threads=None if mt else 1
            )
        ),
    )
    if cv2 is not None:

        def cv_two_pass():
            cv2.resize(src, (hw, hh), dst=small, interpolation=cv2.INTER_AREA)
            cv2.cvtColor(small, cv2.COLOR_BGRA2RGB, dst=small_rgb)

        add("resize /2 area -> RGB (fused)", "opencv resize + cvtColor", b, lambda mt: cv_two_pass)
    # arbitrary sizes for AI inputs
    for ow, oh in [(1280, 720), (224, 224)]:
        if ow >= w:
            continue
        dst = np.empty((oh, ow, 4), np.uint8)
        b = 4 * n + 4 * ow * oh
        for method, cvm, pilm in [
            ("area", "INTER_AREA", "BOX"),
            ("bilinear", "INTER_LINEAR", "BILINEAR"),
        ]:
            op = f"resize {ow}x{oh} {method}"
            add(
                op,
                "framebus",
                b,
                lambda mt, m=method, ow=ow, oh=oh, dst=dst: (
                    lambda: fb.resize(src, ow, oh, m, "BGRA", out=dst, threads=None if mt else 1)
                ),
            )
            if cv2 is not None:
                add(
                    op,
                    "opencv resize",
                    b,
                    lambda mt, m=cvm, ow=ow, oh=oh, dst=dst: (
                        lambda: cv2.resize(src, (ow, oh), dst=dst, interpolation=getattr(cv2, m))
                    ),
                )
            if Image is not None:
                add(
                    op,
                    "pillow resize",
                    b,
                    lambda mt, m=pilm, ow=ow, oh=oh: (
                        None
                        if mt
                        else lambda: Image.frombuffer(
                            "RGBA", (w, h), src, "raw", "RGBA", 0, 1
                        ).resize((ow, oh), getattr(Image.Resampling, m))
                    ),
                )
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    b = 4 * n + 3 * 4 * 224 * 224
    op = "to_tensor 224x224 CHW f32"
    add(
        op,
        "framebus",
        b,
        lambda mt: (
            lambda: fb.to_tensor(
                src, (224, 224), mean, std, "bilinear", "BGRA", threads=None if mt else 1
            )
        ),
    )
    if cv2 is not None:

        def cv_tensor():
            small4 = cv2.resize(src, (224, 224), interpolation=cv2.INTER_LINEAR)
            rgb3 = cv2.cvtColor(small4, cv2.COLOR_BGRA2RGB)
            return np.ascontiguousarray(((rgb3 / np.float32(255) - mean) / std).transpose(2, 0, 1))

        add(op, "opencv resize+cvtColor, numpy normalise", b, lambda mt: cv_tensor)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=0, help="0: 21 at 1080p, 11 at 4K")
    ap.add_argument("--res", default="1080p,4k")
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args()
    rows = []
    for res in args.res.split(","):
        w, h = RES[res]
        reps = args.repeats or (21 if res == "1080p" else 11)
        src = np.random.default_rng(0).integers(0, 256, (h, w, 4), dtype=np.uint8)
        for mt in (False, True):
            if cv2 is not None:
                cv2.setNumThreads(-1 if mt else 1)
            copy_gbs = None
            for op, impl, nbytes, make in cases(w, h, src):
                fn = make(mt)
                if fn is None:
                    continue
                t = timeit(fn, reps)
                gbs = nbytes / t / 1e9
                if copy_gbs is None:
                    copy_gbs = gbs
                rows.append((res, "all" if mt else "1", op, impl, t * 1e3, gbs, gbs / copy_gbs))
                print(
                    f"{res:5} thr={'all' if mt else '1':3} {op:30} {impl:34} {t * 1e3:8.2f} ms "
                    f"{gbs:6.2f} GB/s {gbs / copy_gbs:5.0%}",
                    file=sys.stderr,
                )
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}, "
        f"opencv {cv2.__version__ if cv2 else '-'}, "
        f"pillow {Image.__version__ if Image else '-'}, framebus SIMD {fb.simd_level()}",
        f"Command: python {' '.join(sys.argv)}",
        "",
        "| res | threads | operation | implementation | ms (median) | GB/s | vs copy |",
        "|---|---|---|---|---|---|---|",
    ]
    for res, thr, op, impl, ms, gbs, rel in rows:
        lines.append(f"| {res} | {thr} | {op} | {impl} | {ms:.2f} | {gbs:.2f} | {rel:.0%} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
