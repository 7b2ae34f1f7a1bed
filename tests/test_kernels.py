"""End-to-end tests of the pixel kernels: convert / resize / to_tensor.

Every conversion is checked bit-exactly against a NumPy reference written from the
formulas in docs/kernels.md, on random images of awkward sizes (1x1, odd widths,
padded and stepped rows), for every SIMD level this machine runs and single- and
multi-threaded; YUV is also checked against FFmpeg's swscale (within +-1).
"""

import math
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import framebus
import numpy as np
import pytest
from framebus import _framebus as fb

LEVELS = fb.simd_levels()
PACKED = ["BGRA", "BGRX", "RGBA", "RGB", "BGR", "GRAY8", "GRAY16", "RGBA16"]
CHANNELS = {
    "BGRA": 4,
    "BGRX": 4,
    "RGBA": 4,
    "RGB": 3,
    "BGR": 3,
    "GRAY8": 1,
    "GRAY16": 1,
    "RGBA16": 4,
}
# byte order of R, G, B, alpha (None: no alpha / an X byte)
ORDER = {
    "BGRA": (2, 1, 0, 3),
    "BGRX": (2, 1, 0, None),
    "RGBA": (0, 1, 2, 3),
    "RGB": (0, 1, 2, None),
    "BGR": (2, 1, 0, None),
}
SIZES = [(1, 1), (2, 2), (3, 5), (17, 3), (66, 9), (131, 34)]
RNG = np.random.default_rng(20261121)


def random_image(fmt, w, h, pad=0):
    """A (h, w[, c]) view with `pad` extra pixels of row padding (so rows are strided)."""
    dt = np.uint16 if fmt.endswith("16") else np.uint8
    c = CHANNELS[fmt]
    shape = (h, w + pad, c) if c > 1 else (h, w + pad)
    full = RNG.integers(0, np.iinfo(dt).max + 1, shape, dtype=dt)
    return full[:, :w]


# ---------------------------------------------------------------- NumPy reference


def luma(r, g, b):
    r, g, b = (c.astype(np.int64) for c in (r, g, b))
    return (9798 * r + 19234 * g + 3736 * b + 16384) >> 15


def to8(v):
    return ((v.astype(np.int64) + 128) // 257).astype(np.uint8)


def to_rgba8(a, fmt):
    if fmt == "RGBA16":
        return to8(a)
    if fmt in ("GRAY8", "GRAY16"):
        g = to8(a) if fmt == "GRAY16" else a
        return np.stack([g, g, g, np.full_like(g, 255)], -1)
    r, g, b, al = ORDER[fmt]
    alpha = a[..., al] if al is not None else np.full(a.shape[:2], 255, np.uint8)
    return np.stack([a[..., r], a[..., g], a[..., b], alpha], -1)


def from_rgba8(rgba, fmt):
    if fmt == "GRAY8":
        return luma(rgba[..., 0], rgba[..., 1], rgba[..., 2]).astype(np.uint8)
    if fmt == "GRAY16":
        return from_rgba8(rgba, "GRAY8").astype(np.uint16) * 257
    if fmt == "RGBA16":
        return rgba.astype(np.uint16) * 257
    r, g, b, al = ORDER[fmt]
    out = np.empty(rgba.shape[:2] + (CHANNELS[fmt],), np.uint8)
    out[..., r], out[..., g], out[..., b] = rgba[..., 0], rgba[..., 1], rgba[..., 2]
    if len(ORDER[fmt]) == 4 and CHANNELS[fmt] == 4:
        out[..., 3] = rgba[..., 3] if al is not None else 255
    return out


def ref_convert(a, sf, df):
    if sf == df:
        return a.copy()
    if (sf, df) == ("RGBA16", "GRAY16"):
        return luma(a[..., 0], a[..., 1], a[..., 2]).astype(np.uint16)
    if (sf, df) == ("GRAY16", "RGBA16"):
        return np.stack([a, a, a, np.full_like(a, 65535)], -1)
    return from_rgba8(to_rgba8(a, sf), df)


def q15(x):
    """round(x * 32768), halves away from zero (Rust's f64::round)."""
    v = x * 32768.0
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def yuv_weights(matrix, rng):
    kr, kb = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}[matrix]
    sy, sc, off = (219.0 / 255.0, 224.0 / 255.0, 16) if rng == "limited" else (1.0, 1.0, 0)
    yr, yb = q15(kr * sy), q15(kb * sy)
    ub, ur = q15(0.5 * sc), q15(-kr / (2.0 * (1.0 - kb)) * sc)
    vr, vb = q15(0.5 * sc), q15(-kb / (2.0 * (1.0 - kr)) * sc)
    return [(yr, q15(sy) - yr - yb, yb), (ur, -(ur + ub), ub), (vr, -(vr + vb), vb)], off


def ref_yuv(a, sf, df, matrix, rng):
    rgb = to_rgba8(a, sf)[..., :3].astype(np.int64)
    (ky, ku, kv), off = yuv_weights(matrix, rng)
    h, w = rgb.shape[:2]
    y = np.clip((rgb @ np.array(ky) + (off << 15) + (1 << 14)) >> 15, 0, 255)
    s = rgb.reshape(h // 2, 2, w // 2, 2, 3).sum(axis=(1, 3))
    u = np.clip((s @ np.array(ku) + (128 << 17) + (1 << 16)) >> 17, 0, 255)
    v = np.clip((s @ np.array(kv) + (128 << 17) + (1 << 16)) >> 17, 0, 255)
    if df == "NV12":
        chroma = np.stack([u, v], -1).reshape(h // 2, w)
    else:
        chroma = np.concatenate([u.reshape(-1), v.reshape(-1)]).reshape(h // 2, w)
    return np.concatenate([y, chroma]).astype(np.uint8)


# ---------------------------------------------------------------- conversions


@pytest.mark.parametrize("src_format", PACKED)
def test_every_conversion_is_bit_exact(src_format):
    for w, h in SIZES:
        a = random_image(src_format, w, h, pad=3)  # padded rows
        for df in PACKED:
            want = ref_convert(a, src_format, df)
            for level in LEVELS:
                for threads in (1, None):
                    got = np.asarray(fb.convert(a, src_format, df, simd=level, threads=threads))
                    assert got.shape == want.shape and got.dtype == want.dtype, (df, got.shape)
                    assert np.array_equal(got, want), f"{src_format}->{df} {w}x{h} {level}"


@pytest.mark.parametrize("dst_format", ["NV12", "I420"])
@pytest.mark.parametrize(
    "matrix,rng", [("bt601", "limited"), ("bt709", "limited"), ("bt601", "full"), ("bt709", "full")]
)
def test_yuv_is_bit_exact(dst_format, matrix, rng):
    for w, h in [(2, 2), (6, 4), (34, 6), (130, 10)]:
        for sf in ["BGRA", "BGRX", "RGBA", "RGB", "BGR", "GRAY8", "RGBA16"]:
            a = random_image(sf, w, h, pad=1)
            want = ref_yuv(a, sf, dst_format, matrix, rng)
            for level in LEVELS:
                got = fb.convert(a, sf, dst_format, matrix=matrix, range=rng, simd=level)
                assert np.array_equal(np.asarray(got), want), f"{sf}->{dst_format} {w}x{h} {level}"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
@pytest.mark.parametrize("pix_fmt,fmt", [("nv12", "NV12"), ("yuv420p", "I420")])
@pytest.mark.parametrize(
    "matrix,rng", [("bt601", "limited"), ("bt709", "limited"), ("bt601", "full"), ("bt709", "full")]
)
def test_yuv_matches_ffmpeg_swscale(pix_fmt, fmt, matrix, rng):
    # swscale's area filter averages each 2x2 chroma block like framebus does;
    # accurate_rnd turns off its low-precision fast paths.
    w, h = 96, 54
    img = RNG.integers(0, 256, (h, w, 4), dtype=np.uint8)
    vf = (
        f"scale=out_color_matrix={matrix}:out_range={'tv' if rng == 'limited' else 'pc'}"
        ":flags=area+accurate_rnd"
    )
    cmd = [
        "ffmpeg",
        "-v",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "bgra",
        "-s",
        f"{w}x{h}",
        "-i",
        "-",
        "-vf",
        vf,
        "-pix_fmt",
        pix_fmt,
        "-f",
        "rawvideo",
        "-",
    ]
    out = subprocess.run(cmd, input=img.tobytes(), capture_output=True, check=True).stdout
    want = np.frombuffer(out, np.uint8).astype(int)
    got = np.asarray(fb.convert(img, "BGRA", fmt, matrix=matrix, range=rng)).reshape(-1)
    assert want.size == got.size == w * h * 3 // 2
    assert np.abs(want - got).max() <= 1


def test_lossless_round_trips():
    for sf, df in [
        ("BGRA", "RGBA"),
        ("RGB", "BGR"),
        ("RGBA", "RGBA16"),
        ("GRAY8", "GRAY16"),
        ("BGRA", "RGBA16"),
    ]:
        a = random_image(sf, 37, 11, pad=2)
        back = fb.convert(fb.convert(a, sf, df), df, sf)
        assert np.array_equal(np.asarray(back), a), (sf, df)
    # every 16-bit value comes back to the nearest 8-bit one: (v + 128) // 257
    v = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    assert np.array_equal(np.asarray(fb.convert(v, "GRAY16", "GRAY8")), to8(v))


def test_strided_sources():
    a = random_image("BGRA", 40, 30)
    stepped = a[::3]  # every third row: row stride 3 * 160
    got = np.asarray(fb.convert(stepped, "BGRA", "RGB"))
    assert np.array_equal(got, stepped[..., 2::-1])
    # a flat buffer with explicit geometry and row padding
    flat = np.zeros(10 * 52, np.uint8)
    rows = flat.reshape(10, 52)
    rows[:, :48] = RNG.integers(0, 256, (10, 48))
    got = np.asarray(fb.convert(flat, "RGB", "BGR", width=16, height=10, stride=52))
    assert np.array_equal(got, rows[:, :48].reshape(10, 16, 3)[..., ::-1])
    with pytest.raises(ValueError, match="contiguous"):
        fb.convert(a[:, ::2], "BGRA", "RGB")
    with pytest.raises(ValueError, match="needs the width and height"):
        fb.convert(bytes(16), "BGRA", "RGB")
    with pytest.raises(ValueError, match="negative stride"):
        fb.convert(a[::-1], "BGRA", "RGB")


# ---------------------------------------------------------------- frames, pools and out=


def test_frame_convert_uses_the_frames_pool_and_keeps_metadata():
    pool = framebus.FramePool(max_slots=2)
    src = pool.acquire(33, 7, "BGRA")
    np.asarray(src)[:] = random_image("BGRA", 33, 7)
    rgb = src.convert("RGB")
    assert isinstance(rgb, framebus.Frame)
    assert (rgb.width, rgb.height, rgb.format) == (33, 7, "RGB")
    assert rgb.timestamp == src.timestamp and rgb.seq == src.seq
    assert pool.stats()["slots_in_use"] == 2, "the result must live in the source's pool"
    assert np.array_equal(np.asarray(rgb), np.asarray(src)[..., 2::-1])
    with pytest.raises(framebus.PoolExhausted):
        src.convert("GRAY8")  # both slots are held
    rgb.release()
    gray = src.convert("GRAY8")
    assert gray.format == "GRAY8"
    # A blocking pool waits for a slot without holding the GIL: a release from
    # another thread lets the conversion finish.
    blocking = framebus.FramePool(max_slots=2, on_exhausted="block", timeout=10)
    src2 = blocking.acquire(33, 7, "BGRA")
    held = blocking.acquire(33, 7, "RGB")
    threading.Timer(0.2, held.release).start()
    t0 = time.perf_counter()
    out = src2.convert("RGB")
    assert 0.1 < time.perf_counter() - t0 < 5 and out.format == "RGB"


def test_out_buffers_are_checked_and_written():
    src = framebus.default_pool().acquire(20, 10, "BGRA")
    np.asarray(src)[:] = random_image("BGRA", 20, 10)
    out = np.zeros((10, 20, 3), np.uint8)
    assert src.convert("RGB", out=out) is out
    assert np.array_equal(out, np.asarray(src)[..., 2::-1])
    padded = np.zeros((10, 25, 3), np.uint8)
    fb.convert(src, None, "RGB", out=padded[:, :20])
    assert np.array_equal(padded[:, :20], out) and not padded[:, 20:].any()
    ba = bytearray(20 * 10)
    fb.convert(src, None, "GRAY8", out=ba)
    assert np.array_equal(
        np.frombuffer(ba, np.uint8).reshape(10, 20), ref_convert(np.asarray(src), "BGRA", "GRAY8")
    )
    with pytest.raises(ValueError, match="599 bytes is too small: 600 bytes needed"):
        src.convert("RGB", out=bytearray(599))
    with pytest.raises(
        ValueError, match=r"width 20 was asked for .* width 19; expected \(10, 20, 3\)"
    ):
        src.convert("RGB", out=np.zeros((10, 19, 3), np.uint8))
    with pytest.raises(ValueError, match="writable"):
        src.convert("RGB", out=bytes(600))
    with pytest.raises(ValueError, match="overlaps"):
        fb.convert(out, "RGB", "BGR", out=out)
    with pytest.raises(ValueError, match="read-only Frame"):
        src.convert("BGRA", out=src.convert("BGRA").as_readonly())
    dst = framebus.default_pool().acquire(20, 10, "RGBA")
    assert src.convert("RGBA", out=dst) is dst
    assert np.array_equal(np.asarray(dst), ref_convert(np.asarray(src), "BGRA", "RGBA"))


def test_bad_arguments_raise_value_error_naming_them():
    a = random_image("BGRA", 4, 4)
    with pytest.raises(ValueError, match='"YUYV"'):
        fb.convert(a, "BGRA", "YUYV")
    with pytest.raises(ValueError, match="NV12 to RGB"):
        fb.convert(np.zeros((6, 4), np.uint8), "NV12", "RGB")
    with pytest.raises(ValueError, match='"avx9"'):
        fb.convert(a, "BGRA", "RGB", simd="avx9")
    if "neon" not in LEVELS:
        with pytest.raises(ValueError, match="neon is not available"):
            fb.convert(a, "BGRA", "RGB", simd="neon")
    with pytest.raises(ValueError, match="even width"):
        fb.convert(random_image("BGRA", 5, 4), "BGRA", "NV12")
    with pytest.raises(ValueError, match='"bt2020"'):
        fb.convert(a, "BGRA", "NV12", matrix="bt2020")
    with pytest.raises(ValueError, match="invalid threads=-1"):
        fb.convert(a, "BGRA", "RGB", threads=-1)
    with pytest.raises(ValueError, match="src_format is required"):
        fb.convert(a, None, "RGB")
    with pytest.raises(ValueError, match=r"expected \(height, width, 4\) or \(height, width\*4\)"):
        fb.convert(np.zeros((4, 10), np.uint8), "BGRA", "RGB")
    with pytest.raises(ValueError, match="format 'f' are not 8- or 16-bit"):
        fb.convert(np.zeros((4, 4, 4), np.float32), "BGRA", "RGB")


def test_simd_levels_and_env_override():
    assert LEVELS[0] == "scalar" and fb.simd_level() == LEVELS[-1]
    code = "from framebus import _framebus as fb; print(fb.simd_level())"
    env = dict(os.environ, FRAMEBUS_SIMD="scalar")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "scalar", out.stderr


# ---------------------------------------------------------------- resize and tensors


def axis_weights(n_in, n_out, method):
    """Dense (n_out, n_in) integer weight matrix per docs/kernels.md (rows sum to 2048)."""
    m = np.zeros((n_out, n_in), np.int64)
    for i in range(n_out):
        if method == "bilinear":
            num, den = (2 * i + 1) * n_in - n_out, 2 * n_out
            if num <= 0:
                m[i, 0] = 2048
                continue
            x0, f = num // den, (num % den) * 2048 // den
            if x0 + 1 >= n_in or f == 0:
                m[i, min(x0, n_in - 1)] = 2048
            else:
                m[i, x0], m[i, x0 + 1] = 2048 - f, f
        else:
            lo, hi = i * n_in, (i + 1) * n_in
            js = range(lo // n_out, (hi - 1) // n_out + 1)
            raw = [min(hi, (j + 1) * n_out) - max(lo, j * n_out) for j in js]
            q = [r * 2048 // n_in for r in raw]
            q[raw.index(max(raw))] += 2048 - sum(q)
            m[i, js.start : js.stop] = q
    return m


def ref_resize(a, ow, oh, method):
    wy, wx = axis_weights(a.shape[0], oh, method), axis_weights(a.shape[1], ow, method)
    chans = [wy @ a[..., c].astype(np.int64) @ wx.T for c in range(a.shape[2])]
    return ((np.stack(chans, -1) + (1 << 21)) >> 22).astype(np.uint8)


@pytest.mark.parametrize("method", ["bilinear", "area"])
def test_resize_matches_numpy_reference(method):
    for (w, h), (ow, oh) in [
        ((8, 6), (4, 3)),
        ((17, 9), (5, 4)),
        ((3, 3), (7, 5)),
        ((64, 36), (16, 9)),
        ((1, 1), (3, 2)),
        ((100, 60), (50, 30)),
        ((97, 41), (33, 40)),
        ((300, 200), (224, 224)),
        ((640, 360), (101, 57)),
    ]:
        a = random_image("BGRA", w, h, pad=2)
        want = ref_resize(a, ow, oh, method)
        for level in LEVELS:
            got = fb.resize(a, ow, oh, method, "BGRA", simd=level, threads=1)
            assert np.array_equal(np.asarray(got), want), (w, h, ow, oh, level)
        for threads in (1, None):
            got = fb.resize(a, ow, oh, method, "BGRA", threads=threads)
            assert np.array_equal(np.asarray(got), want), (w, h, ow, oh)
            rgb = fb.resize(a, ow, oh, method, "BGRA", "RGB", threads=threads)  # fused
            assert np.array_equal(np.asarray(rgb), want[..., 2::-1])
            nv12 = fb.resize(a, ow * 2, oh * 2, method, "BGRA", "NV12")
            assert nv12.shape == (oh * 3, ow * 2)


def test_frame_resize_and_box_downscale():
    src = framebus.default_pool().acquire(64, 32, "RGB")
    np.asarray(src)[:] = random_image("RGB", 64, 32)
    a = np.asarray(src).astype(np.int64)
    for f in (2, 4):
        small = src.resize(64 // f, 32 // f, "area")
        box = a.reshape(32 // f, f, 64 // f, f, 3).sum(axis=(1, 3))
        assert np.array_equal(np.asarray(small), (box + f * f // 2) // (f * f))
    g = src.resize(16, 8, "area", format="GRAY8")
    assert g.format == "GRAY8" and g.shape == (8, 16)
    with pytest.raises(ValueError, match="8-bit packed"):
        fb.resize(np.zeros((4, 4), np.uint16), 2, 2, "area", "GRAY16")
    with pytest.raises(ValueError, match='"cubic"'):
        src.resize(8, 8, "cubic")


def test_to_tensor_is_normalised_chw_float32():
    src = framebus.default_pool().acquire(40, 20, "BGRA")
    np.asarray(src)[:] = random_image("BGRA", 40, 20)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    t = framebus._framebus.to_tensor(src, (20, 10), mean, std)
    assert t.dtype == np.float32 and t.shape == (3, 10, 20) and t.flags.c_contiguous
    rgb = ref_resize(np.asarray(src), 20, 10, "area")[..., 2::-1]
    want = (rgb.astype(np.float32) / np.float32(255) - np.array(mean, np.float32)) / np.array(
        std, np.float32
    )
    assert np.array_equal(t, want.transpose(2, 0, 1))
    t2 = src.to_tensor()
    assert t2.shape == (3, 20, 40)
    assert np.array_equal(t2[0] * 255, np.asarray(src)[..., 2].astype(np.float32))
    with pytest.raises(ValueError, match="std"):
        src.to_tensor(std=(1, 0, 1))
    with pytest.raises(ValueError, match="3 values"):
        src.to_tensor(mean=(1, 2))


def test_gil_is_released_during_kernels():
    # A slow (scalar, one thread) conversion in a worker thread; if it held the GIL,
    # this thread could not run a single bytecode until it returned.
    src = RNG.integers(0, 256, (2000, 2000, 4), dtype=np.uint8)
    out = np.empty((3000, 2000), np.uint8)
    t0 = time.perf_counter()
    fb.convert(src, "BGRA", "NV12", out=out, simd="scalar", threads=1)
    one = time.perf_counter() - t0
    done = threading.Event()

    def work():
        for _ in range(3):
            fb.convert(src, "BGRA", "NV12", out=out, simd="scalar", threads=1)
        done.set()

    worker = threading.Thread(target=work)
    ticks = 0
    worker.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0)
    worker.join()
    # sleep(0) loops run ~1e5-1e6/s; 3 conversions of `one` seconds each leave far
    # more than this many iterations when the GIL is free.
    assert ticks > 200, (ticks, one)


# ---------------------------------------------------------------- huge images


def test_converted_frames_go_back_to_the_pool_and_the_os_on_trim():
    pool = framebus.FramePool()
    src = pool.acquire(2000, 1500, "RGBA16")
    np.asarray(src)[:] = 1000
    dst = src.convert("RGBA")
    assert np.asarray(dst)[1499, 1999].tolist() == [4] * 4  # (1000 + 128) // 257
    slot = dst.slot_id
    dst.release()
    again = src.convert("RGBA")
    assert again.slot_id == slot, "the released slot is reused"
    again.release()
    src.release()
    assert pool.trim() >= 2000 * 1500 * (8 + 4)


def test_huge_rgba16_converts_without_a_second_full_size_temporary():
    """8000x6000 RGBA16 (384 MB) -> RGBA (192 MB) into a pool slot: the peak RSS grows
    by the destination only (row bands written in place), not by another image."""
    code = textwrap.dedent("""
        import numpy as np, framebus
        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) * 1024
        src = np.ones((6000, 8000, 4), np.uint16) * 40000
        before = hwm()
        dst = framebus._framebus.convert(src, "RGBA16", "RGBA")
        grown = hwm() - before
        assert np.asarray(dst)[5999, 7999].tolist() == [156] * 4, np.asarray(dst)[5999, 7999]
        print(grown)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    grown = int(out.stdout)
    dst_bytes = 8000 * 6000 * 4
    assert grown < dst_bytes + (32 << 20), f"peak grew by {grown} bytes"
