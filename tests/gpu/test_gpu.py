"""framebus.cuda on a real GPU, with torch and CuPy as consumers: pixel-exact
against the CPU kernels, the same device pointer through DLPack and CAI, a
long-running consumer kernel that must not see its buffer reused, and device
memory flat over 10 000 frames."""

from __future__ import annotations

import gc

import framebus
import framebus.cuda as fcuda
import numpy as np
import pytest

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def frame(pool, w=1920, h=1080, seed=0):
    f = pool.acquire(w, h, "BGRA")
    a = np.asarray(f)
    a[...] = np.random.default_rng(seed).integers(0, 256, a.shape, dtype=np.uint8)
    return f


@pytest.fixture(scope="module")
def pool():
    return framebus.FramePool(pinned="cuda:0")


@pytest.mark.parametrize("fmt", ["BGRA", "RGB", "BGR", "GRAY8"])
def test_integer_formats_are_pixel_exact(pool, fmt):
    torch = pytest.importorskip("torch")
    f = frame(pool, 1001, 777, seed=1)
    cf = f.to_device(format=None if fmt == "BGRA" else fmt)
    got = torch.from_dlpack(cf).cpu().numpy()
    want = np.asarray(f if fmt == "BGRA" else f.convert(fmt))
    assert np.array_equal(got, want)
    assert np.array_equal(np.asarray(cf.to_host()), want)


def test_float_chw_within_one_ulp_of_to_tensor(pool):
    torch = pytest.importorskip("torch")
    f = frame(pool, 1001, 777, seed=2)
    got = torch.from_dlpack(f.to_device(format="RGB_F32_CHW", mean=MEAN, std=STD)).cpu().numpy()
    want = f.to_tensor(mean=MEAN, std=STD)
    ulps = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1, ulps.max()


@pytest.mark.parametrize("size", [(640, 360), (224, 224), (2560, 1440), (333, 777)])
@pytest.mark.parametrize("fmt", ["BGRA", "RGB", "GRAY8"])
def test_resize_is_pixel_exact(pool, size, fmt):
    torch = pytest.importorskip("torch")
    f = frame(pool, 1920, 1080, seed=6)
    cf = f.to_device(format=None if fmt == "BGRA" else fmt, size=size)
    got = torch.from_dlpack(cf).cpu().numpy()
    want = np.asarray(f.resize(*size, "bilinear", format=fmt))
    assert np.array_equal(got, want)


@pytest.mark.parametrize("size", [(960, 540), (224, 224), (1280, 720)])
@pytest.mark.parametrize("fmt", ["BGRA", "RGB", "NV12"])
def test_area_resize_is_pixel_exact(pool, size, fmt):
    torch = pytest.importorskip("torch")
    f = frame(pool, 1920, 1080, seed=9)
    cf = f.to_device(format=None if fmt == "BGRA" else fmt, size=size, method="area")
    got = torch.from_dlpack(cf).cpu().numpy()
    want = f.resize(*size, "area", format=fmt)
    assert got.tobytes() == bytes(memoryview(want).cast("B"))[: got.nbytes]


def test_resized_float_chw_within_one_ulp_of_to_tensor(pool):
    torch = pytest.importorskip("torch")
    f = frame(pool, 1920, 1080, seed=7)
    cf = f.to_device(format="RGB_F32_CHW", mean=MEAN, std=STD, size=(224, 224))
    got = torch.from_dlpack(cf).cpu().numpy()
    want = f.to_tensor(size=(224, 224), mean=MEAN, std=STD, method="bilinear")
    ulps = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1, ulps.max()


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
@pytest.mark.parametrize("size", [None, (1280, 720)])
def test_nv12_is_pixel_exact(pool, matrix, size):
    torch = pytest.importorskip("torch")
    f = frame(pool, 1920, 1080, seed=8)
    cf = f.to_device(format="NV12", matrix=matrix, size=size)
    got = torch.from_dlpack(cf).cpu().numpy()
    w, h = size or (1920, 1080)
    if size is None:
        want = f.convert("NV12", matrix=matrix)
    else:
        want = f.resize(w, h, "bilinear", format="NV12", matrix=matrix)
    assert got.shape == (h * 3 // 2, w)
    assert got.tobytes() == bytes(memoryview(want).cast("B"))[: w * h * 3 // 2]


def test_same_device_pointer_through_dlpack_and_cai(pool):
    torch = pytest.importorskip("torch")
    cp = pytest.importorskip("cupy")
    cf = frame(pool, 640, 480).to_device(format="RGB")
    assert torch.from_dlpack(cf).data_ptr() == cf.data_ptr
    assert cp.from_dlpack(cf).data.ptr == cf.data_ptr
    assert cp.asarray(cf).data.ptr == cf.data_ptr  # __cuda_array_interface__
    assert torch.as_tensor(cf, device="cuda").data_ptr() == cf.data_ptr


def test_long_consumer_kernel_keeps_its_buffer(pool):
    torch = pytest.importorskip("torch")
    dpool = fcuda.DevicePool(max_bytes=8 << 20)  # one 1080p BGRA buffer
    a = frame(pool, seed=3)
    want = np.asarray(a).copy()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        cf = a.to_device(pool=dpool)
        t = torch.from_dlpack(cf)  # torch passes s to __dlpack__
        torch.cuda._sleep(2_000_000_000)  # ~1 s of GPU time on s
        seen = t.clone()
    del t, cf
    gc.collect()
    b = frame(pool, seed=4)
    cf2 = b.to_device(pool=dpool)  # may only take the buffer after s's work
    s.synchronize()
    assert np.array_equal(seen.cpu().numpy(), want)
    assert np.array_equal(torch.from_dlpack(cf2).cpu().numpy(), np.asarray(b))
    assert dpool.stats()["fence_waits"] >= 1


def test_device_memory_flat_over_10000_frames(pool):
    torch = pytest.importorskip("torch")
    f = frame(pool, seed=5)
    dpool = fcuda.DevicePool()
    for _ in range(100):
        torch.from_dlpack(f.to_device(format="RGB_F32_CHW", mean=MEAN, std=STD)).sum()
    torch.cuda.synchronize()
    before = fcuda.device_info(0)["free_memory"]
    for _ in range(10_000):
        t = torch.from_dlpack(f.to_device(format="RGB_F32_CHW", mean=MEAN, std=STD, pool=dpool))
        del t
    torch.cuda.synchronize()
    after = fcuda.device_info(0)["free_memory"]
    assert abs(before - after) <= 64 << 20, (before, after, dpool.stats())
    assert dpool.stats()["buffers"] <= 8, dpool.stats()


def test_capture_on_the_device_equals_a_host_grab():
    """framebus.cuda.capture: pinned slots, CudaFrames equal to a host grab
    converted on the CPU (needs a display: gpu-check.sh starts Xvfb)."""
    import os

    torch = pytest.importorskip("torch")
    if not os.environ.get("DISPLAY"):
        pytest.skip("no DISPLAY")
    region = {"left": 0, "top": 0, "width": 640, "height": 480}
    with framebus.Capture(region, device="cuda:0", format="RGB", target_fps=30) as cap:
        cf = cap.latest(timeout=10)
        got = torch.from_dlpack(cf).cpu().numpy()
        assert cap.pool.stats()["pinned_slots"] >= 1
    want = np.asarray(framebus.grab(region).convert("RGB"))
    assert np.array_equal(got, want)  # a still Xvfb screen


def test_subscriber_on_the_device_pins_read_only_and_is_pixel_exact():
    """Subscriber(device=): the publisher's slots registered read-only (the
    driver accepts CU_MEMHOSTREGISTER_READ_ONLY), frames equal the CPU's."""
    import os

    torch = pytest.importorskip("torch")
    name = f"gpu-check-{os.getpid()}"
    with (
        framebus.Publisher(name, mode="lossless") as pub,
        framebus.Subscriber(name, timeout=5, device="cuda:0", format="RGB") as sub,
    ):
        for k in range(20):
            f = frame(pub.pool, 1280, 720, seed=50 + k)
            want = np.asarray(f.convert("RGB")).copy()
            pub.send(f)
            del f
            got = torch.from_dlpack(sub.recv(timeout=5)).cpu().numpy()
            assert np.array_equal(got, want)
        pinned = sub.pinned
        assert pinned["pin_failures"] == 0 and pinned["pinned_slots"] >= 1, pinned


def test_mss_to_torch_on_cuda_equals_the_cpu_result():
    import os

    torch = pytest.importorskip("torch")
    if not os.environ.get("DISPLAY"):
        pytest.skip("no DISPLAY")
    from framebus import mss

    with mss.mss() as sct:
        shot = sct.grab({"left": 0, "top": 0, "width": 320, "height": 200})
    for kw in ({}, {"channels": "BGR", "layout": "HWC", "dtype": torch.uint8}):
        on_gpu = shot.to_torch(device="cuda", **kw)
        on_cpu = shot.to_torch(device="cpu", **kw)
        assert on_gpu.is_cuda
        assert torch.equal(on_gpu.cpu(), on_cpu)
