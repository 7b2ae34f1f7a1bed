"""framebus.cuda against the fake CUDA driver (tests/cuda_fake.py): the
orchestration — leases and events, deferred host-slot reuse, deferred
device-buffer reuse behind a slow consumer stream, DLPack and
__cuda_array_interface__ fields and stream arguments, pinned slots, device
pools, out-of-memory and failing copies. The fake tests framebus's logic, not
CUDA (device memory is host memory, so the tests read it with ctypes).

The driver is chosen once per process: this module selects the fake at import
(before any test touches CUDA); tests that need another driver state run in a
subprocess.
"""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
import time

import cuda_fake
import numpy as np
import pytest

FAKE = cuda_fake.build()
if FAKE is None:
    pytest.skip("no C compiler for the fake CUDA driver", allow_module_level=True)
os.environ.setdefault("FRAMEBUS_CUDA_DRIVER", str(FAKE))
os.environ.setdefault("FRAMEBUS_CUDA_NVRTC", str(FAKE))

import framebus  # noqa: E402
import framebus.cuda as fcuda  # noqa: E402

if os.environ["FRAMEBUS_CUDA_DRIVER"] != str(FAKE):
    pytest.skip("another CUDA driver was chosen for this run", allow_module_level=True)

fake = cuda_fake.Fake(FAKE)


def wait_until(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def device_bytes(cf: fcuda.CudaFrame) -> bytes:
    """The CudaFrame's bytes (the fake's device memory is host memory)."""
    cf.synchronize(timeout=10)
    return ctypes.string_at(cf.data_ptr, cf.nbytes)


def host_bytes(f) -> bytes:
    """Every byte of a frame's image, row padding included (stride x height)."""
    return ctypes.string_at(f.address, f.stride * f.height)


def random_frame(pool, w, h, fmt="BGRA", seed=0, stride=None):
    f = pool.acquire(w, h, fmt, stride=stride)
    a = np.asarray(f)
    a[...] = np.random.default_rng(seed).integers(0, 256, a.shape, dtype=np.uint8)
    return f


@pytest.fixture(autouse=True)
def _reset_knobs():
    yield
    for k in ("fail_allocs", "slow_ms", "fail_copies", "fail_register"):
        fake.set(k, 0)


def test_the_fake_is_available():
    assert fcuda.is_available()
    assert fcuda.unavailable_reason() is None
    assert fcuda.device_count() == 1
    info = fcuda.device_info("cuda:0")
    assert "fake" in info["name"]
    assert info["compute_capability"] == (8, 6)
    assert info["driver_version"] == "12.4"


def test_plain_upload_and_download_round_trip():
    pool = framebus.FramePool()
    f = random_frame(pool, 37, 11, stride=37 * 4 + 64)
    cf = f.to_device("cuda:0")
    assert (cf.width, cf.height, cf.pitch, cf.format) == (37, 11, 37 * 4 + 64, "BGRA")
    assert cf.device == "cuda:0" and cf.shape == (11, 37, 4)
    back = cf.to_host(pool, timeout=10)
    assert np.array_equal(np.asarray(back), np.asarray(f))
    assert back.stride == f.stride
    assert device_bytes(cf) == host_bytes(f)


@pytest.mark.parametrize("fmt", ["RGB", "BGR", "GRAY8"])
def test_gpu_conversions_equal_the_cpu_kernels(fmt):
    pool = framebus.FramePool()
    f = random_frame(pool, 33, 17, seed=1, stride=33 * 4 + 12)
    launches = fake.get("launches")
    cf = f.to_device(format=fmt)
    assert fake.get("launches") == launches + 1
    assert cf.format == fmt
    want = np.ascontiguousarray(np.asarray(f.convert(fmt)))
    got = np.frombuffer(device_bytes(cf), np.uint8).reshape(want.shape)
    assert np.array_equal(got, want)
    host = cf.to_host(pool)
    assert np.array_equal(np.asarray(host), want)


def test_tall_images_fit_the_grid():
    """More rows than a grid's y dimension holds blocks (65535 x 8): the
    kernels loop over rows (the fake refuses a grid beyond CUDA's limits)."""
    pool = framebus.FramePool()
    f = random_frame(pool, 3, 600_000, seed=9)
    cf = f.to_device(format="GRAY8")
    want = np.ascontiguousarray(np.asarray(f.convert("GRAY8")))
    got = np.frombuffer(device_bytes(cf), np.uint8).reshape(want.shape)
    assert np.array_equal(got, want)


def test_f32_chw_with_mean_std_equals_to_tensor_bit_for_bit():
    pool = framebus.FramePool()
    f = random_frame(pool, 29, 13, seed=2)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    cf = f.to_device(format="RGB_F32_CHW", mean=mean, std=std)
    assert cf.shape == (3, 13, 29) and cf.pitch == 29 * 4
    want = f.to_tensor(mean=mean, std=std)
    got = np.frombuffer(device_bytes(cf), np.float32).reshape(3, 13, 29)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    with pytest.raises(ValueError, match="to_host copies 8-bit"):
        cf.to_host()


SIZES = [(16, 9), (64, 36), (50, 30), (13, 7), (100, 80), (1, 1), (75, 3)]


def nv12_bytes(f) -> bytes:
    """An NV12 frame's Y plane and interleaved U/V rows (stride x height x 3/2)."""
    return ctypes.string_at(f.address, f.stride * f.height * 3 // 2)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("fmt", [None, "RGB", "BGR", "GRAY8"])
def test_gpu_resize_equals_the_cpu_resize(size, fmt):
    """size= resizes (bilinear) in the upload's kernel: down, up, odd factors,
    to 1x1 and across one axis only; integer outputs equal Frame.resize."""
    pool = framebus.FramePool()
    f = random_frame(pool, 50, 30, seed=3, stride=50 * 4 + 24)
    cf = f.to_device(format=fmt, size=size)
    out = fmt or "BGRA"
    assert (cf.width, cf.height, cf.format) == (*size, out)
    want = np.ascontiguousarray(np.asarray(f.resize(*size, "bilinear", format=out)))
    assert cf.shape == want.shape
    if size == (50, 30) and fmt is None:
        assert cf.pitch == f.stride  # the same size and format: a plain copy
    else:
        assert cf.pitch == want.strides[0]
        got = np.frombuffer(device_bytes(cf), np.uint8).reshape(want.shape)
        assert np.array_equal(got, want), np.argwhere(got != want)[:5]
    assert np.array_equal(np.asarray(cf.to_host(pool)), want)


@pytest.mark.parametrize("fmt", ["RGB", "BGR", "GRAY8"])
def test_gpu_resize_of_packed_sources_keeps_their_format(fmt):
    pool = framebus.FramePool()
    src = random_frame(pool, 41, 23, seed=4).convert(fmt)
    cf = src.to_device(size=(17, 30))
    assert cf.format == fmt
    want = np.ascontiguousarray(np.asarray(src.resize(17, 30, "bilinear")))
    got = np.frombuffer(device_bytes(cf), np.uint8).reshape(want.shape)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("size", [(224, 224), (37, 21), (640, 360)])
def test_gpu_resized_f32_chw_equals_to_tensor_bit_for_bit(size):
    pool = framebus.FramePool()
    f = random_frame(pool, 320, 180, seed=5)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    cf = f.to_device(format="RGB_F32_CHW", mean=mean, std=std, size=size)
    w, h = size
    assert cf.shape == (3, h, w)
    want = f.to_tensor(size=size, mean=mean, std=std, method="bilinear")
    got = np.frombuffer(device_bytes(cf), np.float32).reshape(3, h, w)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
@pytest.mark.parametrize("range_", ["limited", "full"])
@pytest.mark.parametrize("size", [None, (32, 18), (48, 40)])
def test_gpu_nv12_equals_the_cpu_kernels(matrix, range_, size):
    """NV12 for hardware encoders, resized or not: the Y plane then the
    interleaved U/V rows, equal to Frame.convert / Frame.resize."""
    pool = framebus.FramePool()
    f = random_frame(pool, 64, 36, seed=6, stride=64 * 4 + 8)
    cf = f.to_device(format="NV12", matrix=matrix, range=range_, size=size)
    w, h = size or (64, 36)
    assert (cf.width, cf.height, cf.format, cf.pitch) == (w, h, "NV12", w)
    assert cf.shape == (h * 3 // 2, w) and cf.nbytes == w * h * 3 // 2
    if size is None:
        want = f.convert("NV12", matrix=matrix, range=range_)
    else:
        want = f.resize(w, h, "bilinear", format="NV12", matrix=matrix, range=range_)
    assert want.stride == w
    assert device_bytes(cf) == nv12_bytes(want)
    back = cf.to_host(pool, timeout=10)
    assert back.format == "NV12" and nv12_bytes(back) == nv12_bytes(want)
    # CAI / DLPack see the (h * 3/2, w) byte array.
    cai = cf.__cuda_array_interface__
    assert cai["shape"] == (h * 3 // 2, w) and cai["typestr"] == "|u1"


AREA_SIZES = [(25, 15), (16, 9), (12, 10), (7, 3), (1, 1), (100, 60), (50, 15)]


@pytest.mark.parametrize("size", AREA_SIZES)
@pytest.mark.parametrize("fmt", [None, "RGB", "GRAY8", "NV12"])
def test_gpu_area_resize_equals_the_cpu_resize(size, fmt):
    """method="area": exact 2x (the CPU's box path), non-integer factors, up
    (area of an upscale), 1x1, one axis; byte-equal to Frame.resize."""
    if fmt == "NV12" and (size[0] % 2 or size[1] % 2):
        pytest.skip("NV12 needs even sides")
    pool = framebus.FramePool()
    f = random_frame(pool, 50, 30, seed=11, stride=50 * 4 + 8)
    cf = f.to_device(format=fmt, size=size, method="area")
    out = fmt or "BGRA"
    want = f.resize(*size, "area", format=out)
    assert (cf.width, cf.height, cf.format) == (*size, out)
    assert device_bytes(cf) == ctypes.string_at(want.address, want.nbytes)


def test_gpu_area_f32_chw_equals_to_tensor_default_bit_for_bit():
    pool = framebus.FramePool()
    f = random_frame(pool, 96, 54, seed=12)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    cf = f.to_device(format="RGB_F32_CHW", mean=mean, std=std, size=(40, 22), method="area")
    want = f.to_tensor(size=(40, 22), mean=mean, std=std)  # method="area" is its default
    got = np.frombuffer(device_bytes(cf), np.float32).reshape(3, 22, 40)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    with pytest.raises(ValueError, match="method= applies with size="):
        f.to_device(method="area")
    with pytest.raises(ValueError, match='"nearest"'):
        f.to_device(size=(8, 8), method="nearest")


def test_tall_resizes_fit_the_grid():
    """The resampling kernels loop over rows too (the fake refuses grids beyond
    CUDA's limits): 600 000 output rows, GRAY8 and NV12."""
    pool = framebus.FramePool()
    f = random_frame(pool, 6, 1000, seed=10)
    for fmt, size in (("GRAY8", (3, 600_000)), ("NV12", (4, 600_000))):
        cf = f.to_device(format=fmt, size=size)
        want = f.resize(*size, "bilinear", format=fmt)
        assert device_bytes(cf) == ctypes.string_at(want.address, want.nbytes)


def test_nv12_frames_upload_as_they_are():
    pool = framebus.FramePool()
    nv = random_frame(pool, 16, 8, seed=7).convert("NV12")
    cf = nv.to_device()
    assert cf.format == "NV12" and device_bytes(cf) == nv12_bytes(nv)
    with pytest.raises(ValueError, match="NV12 frame uploads as it is"):
        nv.to_device(size=(8, 4))
    with pytest.raises(ValueError, match="NV12 frame uploads as it is"):
        nv.to_device(format="RGB")


def test_resize_and_nv12_arguments_are_checked():
    pool = framebus.FramePool()
    f = random_frame(pool, 16, 16)
    with pytest.raises(ValueError, match="even width"):
        f.to_device(format="NV12", size=(7, 8))
    with pytest.raises(ValueError, match="even height"):
        f.to_device(format="NV12", size=(8, 7))
    with pytest.raises(ValueError, match="width=0"):
        f.to_device(size=(0, 8))
    with pytest.raises(ValueError, match="height=-3"):
        f.to_device(size=(8, -3))
    with pytest.raises(ValueError, match='"bt2020"'):
        f.to_device(format="NV12", matrix="bt2020")
    with pytest.raises(ValueError, match='"studio"'):
        f.to_device(format="NV12", range="studio")
    with pytest.raises(ValueError, match="matrix= and range="):
        f.to_device(format="RGB", matrix="bt709")
    with pytest.raises(ValueError, match="GPU resizing keeps"):
        f.to_device(format="BGRX", size=(8, 8))
    with pytest.raises(ValueError, match="reads BGRA or BGRX"):
        f.convert("RGB").to_device(format="NV12")
    launches = fake.get("launches")
    # The same size is the plain conversion (no resampling kernel).
    cf = f.to_device(format="RGB", size=(16, 16))
    assert fake.get("launches") == launches + 1
    want = np.asarray(f.convert("RGB"))
    assert np.array_equal(np.frombuffer(device_bytes(cf), np.uint8).reshape(want.shape), want)


def test_pinned_pool_registers_each_slot_once():
    calls = fake.get("register_calls")
    pool = framebus.FramePool(pinned="cuda:0")
    f = pool.acquire(640, 480)
    del f
    for _ in range(5):  # reuses: no new registration
        wait_until(lambda: pool.stats()["slots_in_use"] == 0)
        g = pool.acquire(640, 480)
        g.to_device().synchronize()
        del g
    s = pool.stats()
    assert fake.get("register_calls") == calls + 1
    assert s["pinned_slots"] == 1 and s["pinned_bytes"] == s["bytes_mapped"]
    assert s["pin_register_ns"] > 0 and s["pin_failures"] == 0
    before = fake.get("registered_bytes")
    wait_until(lambda: pool.stats()["slots_in_use"] == 0)
    assert pool.trim() == s["bytes_mapped"]
    assert fake.get("registered_bytes") == before - s["bytes_mapped"]
    assert pool.stats()["pinned_bytes"] == 0


def test_pinning_failure_leaves_the_slot_pageable_and_counted():
    fake.set("fail_register", 1)
    pool = framebus.FramePool(pinned=0)
    f = random_frame(pool, 64, 64)
    s = pool.stats()
    assert s["pin_failures"] == 1 and s["pinned_bytes"] == 0
    cf = f.to_device()
    assert device_bytes(cf) == host_bytes(f)


def test_host_slot_is_held_until_the_copy_completed():
    pool = framebus.FramePool(max_slots=1)
    f = random_frame(pool, 256, 256, seed=3)
    expected = host_bytes(f)
    fake.set("slow_ms", 1000)
    cf = f.to_device()
    f.release()
    del f
    gc.collect()
    # The copy has not run yet: the slot must not come back.
    assert not cf.is_ready()
    assert framebus._framebus._cuda_held_host_frames() >= 1
    with pytest.raises(framebus.PoolExhausted):
        pool.acquire(256, 256)
    cf.synchronize(timeout=10)
    fake.set("slow_ms", 0)
    wait_until(lambda: pool.stats()["slots_in_use"] == 0)
    g = pool.acquire(256, 256)
    np.asarray(g)[...] = 0
    assert device_bytes(cf) == expected


def test_device_buffer_waits_for_a_slow_consumer_stream():
    host = framebus.FramePool()
    dpool = fcuda.DevicePool(max_bytes=2 << 20)  # room for one buffer
    a = random_frame(host, 64, 64, seed=4)
    cf = a.to_device(pool=dpool)
    consumer = fake.stream()
    cap = cf.__dlpack__(stream=consumer, max_version=(1, 0))
    # The consumer's "kernel" runs long, then reads the buffer.
    fake.sleep_on(consumer, 1000)
    seen = fake.read_on(consumer, cf.data_ptr, cf.nbytes)
    ptr = cf.data_ptr
    try:
        del cf, cap  # every export gone, the consumer's work still queued
        gc.collect()
        assert dpool.stats()["buffers_pending"] == 1
        b = random_frame(host, 64, 64, seed=5)
        # Stream-ordered reuse: the same buffer, at once, but framebus's
        # stream waits on the device for the consumer's work first.
        cf2 = b.to_device(pool=dpool)
        assert cf2.data_ptr == ptr
        s = dpool.stats()
        assert (s["stream_ordered_reuses"], s["fence_waits"], s["allocs"]) == (1, 0, 1)
        assert not cf2.is_ready()
    finally:
        fake.synchronize(consumer)  # `seen` must outlive the queued read
    assert bytes(seen) == host_bytes(a)  # the consumer saw its own frame
    assert device_bytes(cf2) == host_bytes(b)


def test_device_buffer_waits_on_the_host_without_a_stream_order():
    """A consumer without a stream order (stream=-1): reuse waits on the host
    for a context synchronisation, which covers the consumer's stream."""
    host = framebus.FramePool()
    dpool = fcuda.DevicePool(max_bytes=2 << 20)
    a = random_frame(host, 64, 64, seed=6)
    cf = a.to_device(pool=dpool)
    consumer = fake.stream()
    cap = cf.__dlpack__(stream=-1)  # the consumer synchronises itself
    fake.sleep_on(consumer, 1000)
    seen = fake.read_on(consumer, cf.data_ptr, cf.nbytes)
    try:
        del cf, cap
        gc.collect()
        assert bytes(seen) != host_bytes(a)  # the consumer has not read yet
        cf2 = random_frame(host, 64, 64, seed=7).to_device(pool=dpool)
        # The reuse synchronised the context, the consumer's stream included:
        # its read happened before framebus took the buffer back.
        assert bytes(seen) == host_bytes(a), dpool.stats()
        assert dpool.stats()["context_syncs"] == 1
        assert dpool.stats()["fence_waits"] == 1
    finally:
        fake.synchronize(consumer)
    cf2.synchronize()


def test_unsynchronised_exports_fence_reuse_with_a_context_sync():
    host = framebus.FramePool()
    dpool = fcuda.DevicePool(max_bytes=2 << 20)
    f = random_frame(host, 32, 32)
    waits = fake.get("stream_waits")
    cf = f.to_device(pool=dpool)
    cap = cf.__dlpack__(stream=-1)
    assert fake.get("stream_waits") == waits  # -1: no synchronisation
    del cf, cap
    gc.collect()
    syncs = dpool.stats()["context_syncs"]
    f.to_device(pool=dpool).synchronize()
    assert dpool.stats()["context_syncs"] == syncs + 1
    # The same for a frame whose __cuda_array_interface__ was read.
    cf = f.to_device(pool=dpool)
    _ = cf.__cuda_array_interface__
    del cf
    gc.collect()
    f.to_device(pool=dpool).synchronize()
    assert dpool.stats()["context_syncs"] == syncs + 2


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [
        ("major", ctypes.c_uint32),
        ("minor", ctypes.c_uint32),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),
        ("flags", ctypes.c_uint64),
        ("dl_tensor", DLTensor),
    ]


class DLManagedTensor(ctypes.Structure):
    _fields_ = [
        ("dl_tensor", DLTensor),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),
    ]


def capsule_tensor(cap, name: bytes):
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    ptr = get(cap, name)
    kind = DLManagedTensorVersioned if name.endswith(b"versioned") else DLManagedTensor
    return kind.from_address(ptr)


def test_dlpack_fields_and_stream_arguments():
    host = framebus.FramePool()
    f = random_frame(host, 20, 10, stride=20 * 4 + 16)
    cf = f.to_device()
    assert cf.__dlpack_device__() == (2, 0)
    cap = cf.__dlpack__(max_version=(1, 0))  # kept: the struct lives in the capsule
    m = capsule_tensor(cap, b"dltensor_versioned")
    assert (m.major, m.minor, m.flags) == (1, 0, 0)
    t = m.dl_tensor
    assert t.data == cf.data_ptr
    assert (t.device.device_type, t.device.device_id, t.ndim) == (2, 0, 3)
    assert (t.dtype.code, t.dtype.bits, t.dtype.lanes) == (1, 8, 1)
    assert [t.shape[i] for i in range(3)] == [10, 20, 4]
    assert [t.strides[i] for i in range(3)] == [96, 4, 1]
    cap2 = cf.__dlpack__()
    legacy = capsule_tensor(cap2, b"dltensor").dl_tensor
    assert legacy.data == cf.data_ptr and legacy.device.device_type == 2
    chw = f.to_device(format="RGB_F32_CHW")
    cap3 = chw.__dlpack__(max_version=(1, 0))
    t = capsule_tensor(cap3, b"dltensor_versioned").dl_tensor
    assert (t.dtype.code, t.dtype.bits) == (2, 32)
    assert [t.shape[i] for i in range(3)] == [3, 10, 20]
    assert [t.strides[i] for i in range(3)] == [200, 20, 1]
    # Stream arguments: a handle, 1 and 2 wait on the device; -1 does not.
    consumer = fake.stream()
    for s in (consumer, 1, 2, None):
        before = fake.get("stream_waits")
        cf.__dlpack__(stream=s)
        assert fake.get("stream_waits") == before + 1, s
    with pytest.raises(ValueError, match="stream=0"):
        cf.__dlpack__(stream=0)
    with pytest.raises(TypeError, match="stream="):
        cf.__dlpack__(stream="default")
    with pytest.raises(ValueError, match="stream=-5"):
        cf.__dlpack__(stream=-5)
    with pytest.raises(BufferError, match="dl_device"):
        cf.__dlpack__(dl_device=(1, 0))
    with pytest.raises(BufferError, match="copy=True"):
        cf.__dlpack__(copy=True)


def test_cuda_array_interface_v3():
    host = framebus.FramePool()
    f = random_frame(host, 20, 10)
    cf = f.to_device(format="RGB")
    cai = cf.__cuda_array_interface__
    assert cai == {
        "version": 3,
        "shape": (10, 20, 3),
        "typestr": "|u1",
        "data": (cf.data_ptr, False),
        "strides": None,
        "stream": cf.stream,
    }
    assert cf.stream not in (0,)
    padded = random_frame(host, 20, 10, stride=96).to_device()
    assert padded.__cuda_array_interface__["strides"] == (96, 4, 1)
    gray = f.to_device(format="GRAY8").__cuda_array_interface__
    assert gray["shape"] == (10, 20) and gray["strides"] is None
    chw = f.to_device(format="RGB_F32_CHW").__cuda_array_interface__
    assert chw["typestr"] == "<f4" and chw["shape"] == (3, 10, 20)


def test_callers_stream_is_used_and_ordered():
    host = framebus.FramePool()
    f = random_frame(host, 16, 16)
    s = fake.stream()
    fake.slow_stream(s, 200)
    cf = f.to_device(stream=s)
    assert cf.stream == s
    assert not cf.is_ready()

    class TorchLikeStream:
        cuda_stream = s

    cf2 = f.to_device(stream=TorchLikeStream())
    assert cf2.stream == s
    cf2.synchronize(timeout=10)
    assert cf.is_ready()  # same stream, earlier work
    fake.slow_stream(s, 0)


def test_out_of_memory_is_a_clear_error_and_leaks_nothing():
    host = framebus.FramePool()
    dpool = fcuda.DevicePool()
    f = random_frame(host, 64, 64)
    fake.set("fail_allocs", 1)
    with pytest.raises(framebus.CudaOutOfMemory, match="out of GPU memory.*cuMemAlloc"):
        f.to_device(pool=dpool)
    assert issubclass(framebus.CudaOutOfMemory, framebus.CudaError)
    assert dpool.stats()["buffers"] == 0
    f.to_device(pool=dpool).synchronize()


def test_out_of_device_memory_gives_back_free_buffers_and_retries():
    host = framebus.FramePool()
    dpool = fcuda.DevicePool()
    f = random_frame(host, 64, 64)
    f.to_device(pool=dpool).synchronize()
    gc.collect()
    assert dpool.stats()["buffers_free"] == 1
    fake.set("fail_allocs", 1)
    big = random_frame(host, 1024, 1024)  # does not fit the free 2 MiB buffer
    big.to_device(pool=dpool).synchronize()
    s = dpool.stats()
    assert s["frees"] == 1 and s["buffers_in_use"] == 0


def test_failing_copy_is_a_clear_error_and_leaks_nothing():
    host = framebus.FramePool()
    dpool = fcuda.DevicePool()
    f = random_frame(host, 64, 64)
    fake.set("fail_copies", 1)
    with pytest.raises(framebus.CudaError, match="cuMemcpyHtoDAsync failed: CUDA_ERROR_UNKNOWN"):
        f.to_device(pool=dpool)
    fake.set("fail_copies", 0)
    s = dpool.stats()
    assert s["buffers_in_use"] == 0
    del f
    gc.collect()
    wait_until(lambda: host.stats()["slots_in_use"] == 0)


def test_device_pool_limits_stats_trim_close():
    host = framebus.FramePool()
    f = random_frame(host, 64, 64)
    with fcuda.DevicePool("cuda:0", max_bytes=4 << 20) as dpool:
        a = f.to_device(pool=dpool)
        b = f.to_device(pool=dpool)
        with pytest.raises(framebus.PoolExhausted, match="max_bytes=4194304"):
            f.to_device(pool=dpool)
        s = dpool.stats()
        assert (s["buffers"], s["buffers_in_use"], s["bytes_allocated"]) == (2, 2, 4 << 20)
        assert s["exhausted"] == 1 and s["high_water_bytes"] == 4 << 20
        a.synchronize()
        b.synchronize()
        del a, b
        gc.collect()
        assert dpool.trim() == 4 << 20
        assert dpool.stats()["bytes_allocated"] == 0
        assert "DevicePool(device='cuda:0'" in repr(dpool)
    with pytest.raises(framebus.PoolClosed):
        f.to_device(pool=dpool)


def test_blocking_device_pool_times_out_and_wakes():
    host = framebus.FramePool()
    f = random_frame(host, 64, 64)
    dpool = fcuda.DevicePool(max_bytes=2 << 20, on_exhausted="block", timeout=0.3)
    a = f.to_device(pool=dpool)
    t = time.monotonic()
    with pytest.raises(framebus.PoolExhausted):
        f.to_device(pool=dpool)
    assert time.monotonic() - t >= 0.25
    a.release()
    assert a.released
    f.to_device(pool=dpool).synchronize()


def test_allocations_are_flat_over_many_frames():
    host = framebus.FramePool(pinned="cuda:0")
    dpool = fcuda.DevicePool()
    f = random_frame(host, 320, 240)
    allocs = fake.get("allocs")
    for _ in range(300):
        cf = f.to_device(pool=dpool, format="RGB_F32_CHW", mean=0.5, std=0.25)
        del cf
    dpool.trim()
    s = dpool.stats()
    assert fake.get("allocs") - allocs <= 2, s  # staging + output, reused stream-ordered
    assert s["buffers_in_use"] == 0


def test_bad_arguments_name_the_value():
    host = framebus.FramePool()
    f = random_frame(host, 8, 8)
    with pytest.raises(ValueError, match='device="cpu"'):
        f.to_device("cpu")
    with pytest.raises(framebus.CudaUnavailable, match="no CUDA device 5"):
        f.to_device("cuda:5")
    with pytest.raises(ValueError, match="I420"):
        f.to_device(format="I420")
    with pytest.raises(ValueError, match="mean= and std="):
        f.to_device(format="RGB", mean=0.5)
    with pytest.raises(ValueError, match="std=0"):
        f.to_device(format="RGB_F32_CHW", std=0.0)
    with pytest.raises(ValueError, match=r"mean=\[1.0, 2.0\]"):
        f.to_device(format="RGB_F32_CHW", mean=[1.0, 2.0])
    with pytest.raises(TypeError, match="stream="):
        f.to_device(stream="fast")
    rgb = f.convert("RGB")
    with pytest.raises(ValueError, match="reads BGRA or BGRX"):
        rgb.to_device(format="GRAY8")
    with pytest.raises(ValueError, match="pool= on cuda:0"):
        f.to_device("cuda:1", pool=fcuda.DevicePool())
    with pytest.raises(ValueError, match="max_bytes=0"):
        fcuda.DevicePool(max_bytes=0)
    cf = f.to_device()
    cf.release()
    with pytest.raises(ValueError, match="released"):
        cf.__dlpack__()
    with pytest.raises(ValueError, match="sm_75"):
        fcuda.compile_kernels("75; rm -rf")


def test_compile_failure_is_a_clear_error():
    code = (
        "import framebus, framebus.cuda\n"
        "f = framebus.FramePool().acquire(8, 8)\n"
        "try:\n"
        "    f.to_device(format='RGB')\n"
        "except framebus.CudaError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        env=cuda_fake.env(FAKE, fail_compile=1),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "CudaError NVRTC could not compile framebus's kernels for compute_" in r.stdout, (
        r.stdout + r.stderr
    )


# ---------------------------------------------------------------- pipelines


def test_device_frames_over_a_channel_subscriber():
    """DeviceFrames(Subscriber) delivers CudaFrames converted on the GPU; the
    channel's slot is held until the copy completed, then given back."""
    name = f"pytest-cuda-{os.getpid()}"
    pub = framebus.Publisher(name, mode="lossless")
    dev = fcuda.DeviceFrames(
        framebus.Subscriber(name, timeout=5.0), "cuda:0", format="RGB", size=(20, 10)
    )
    with pub, dev:
        sent = []
        for k in range(3):
            f = random_frame(pub.pool, 40, 20, seed=20 + k)
            sent.append(np.asarray(f.resize(20, 10, "bilinear", format="RGB")).copy())
            pub.send(f)
        fake.set("slow_ms", 100)
        got = [dev.recv(timeout=5.0) for _ in range(3)]
        assert all(isinstance(cf, fcuda.CudaFrame) for cf in got)
        assert [cf.seq for cf in got] == sorted(cf.seq for cf in got)
        assert framebus._framebus._cuda_held_host_frames() >= 1  # the slow copies hold slots
        for cf, want in zip(got, sent):
            b = np.frombuffer(device_bytes(cf), np.uint8).reshape(want.shape)
            assert np.array_equal(b, want)
        fake.set("slow_ms", 0)
        wait_until(lambda: framebus._framebus._cuda_held_host_frames() == 0)
    with pytest.raises(TypeError, match="no latest"):
        fcuda.DeviceFrames(object())


def test_capture_on_the_device_uses_pinned_slots(xvfb):
    """Capture(..., device=) (and framebus.cuda.capture) grabs into pinned
    slots and hands out CudaFrames equal to a host grab converted on the CPU."""
    from framebus import _framebus

    rng = np.random.default_rng(30)
    img = rng.integers(0, 256, (48, 64, 4), dtype=np.uint8)
    _framebus._test_put_image(xvfb.display, 0, 0, 64, 48, img.tobytes())
    region = {"left": 0, "top": 0, "width": 64, "height": 48}
    ranges = fake.get("registered_ranges")
    with framebus.Capture(
        region, display=xvfb.display, device="cuda:0", format="GRAY8", target_fps=30
    ) as cap:
        cf = cap.latest(timeout=10)
        assert isinstance(cf, fcuda.CudaFrame) and (cf.width, cf.height) == (64, 48)
        assert fake.get("registered_ranges") > ranges  # the capture's slots are pinned
        assert cap.pool.stats()["pinned_slots"] >= 1
        host = framebus.grab(region, display=xvfb.display)
        want = np.asarray(host.convert("GRAY8"))
        got = np.frombuffer(device_bytes(cf), np.uint8).reshape(want.shape)
        assert np.array_equal(got, want)
        assert isinstance(cap.next(timeout=10), fcuda.CudaFrame)
        assert isinstance(next(cap.frames(timeout=10)), fcuda.CudaFrame)
    # stop() closed the capture's own pinned pool: its slots are unpinned
    # once the uploads that hold them are done
    del cf
    gc.collect()
    wait_until(lambda: fake.get("registered_ranges") == ranges)
    # framebus.cuda.capture is Capture(device="cuda:0"): every upload option
    # reaches to_device, the rest reaches Capture.
    opts = {"format": "NV12", "size": (32, 24), "method": "area", "matrix": "bt709"}
    with fcuda.capture(region=region, display=xvfb.display, **opts) as cap:
        cf = cap.latest(timeout=10)
        want = host.resize(32, 24, "area", format="NV12", matrix="bt709")
        assert (cf.format, cf.width, cf.height) == ("NV12", 32, 24)
        assert device_bytes(cf) == ctypes.string_at(want.address, want.nbytes)


def test_subscriber_on_the_device_pins_the_publishers_slots_read_only():
    """Subscriber(name, device=) registers each mapping of the publisher's
    slots once, read-only; frames arrive as CudaFrames converted on the GPU;
    a slot goes back to the publisher only after its copy completed; closing
    unpins every mapping."""
    name = f"pytest-cuda-sub-{os.getpid()}"
    ro = fake.get("readonly_ranges")
    pub = framebus.Publisher(name, mode="lossless", depth=8)
    sub = framebus.Subscriber(name, timeout=5.0, device="cuda:0", format="RGB", size=(20, 10))
    with pub, sub:
        sent, slots, seqs = [], set(), []
        for k in range(30):
            f = random_frame(pub.pool, 40, 20, seed=40 + k)
            sent.append(np.asarray(f.resize(20, 10, "bilinear", format="RGB")).copy())
            slots.add(f.slot_id)
            pub.send(f)
            del f
            cf = sub.recv(timeout=5.0)
            assert isinstance(cf, fcuda.CudaFrame)
            seqs.append(cf.seq)
            b = np.frombuffer(device_bytes(cf), np.uint8).reshape(sent[-1].shape)
            assert np.array_equal(b, sent[-1])
            del cf
        assert seqs == list(range(seqs[0], seqs[0] + 30))  # lossless, in order
        # one read-only registration per publisher slot, not per frame
        assert fake.get("readonly_ranges") - ro == len(slots) < 30
        pinned = sub.pinned
        assert (pinned["pinned_slots"], pinned["pin_failures"]) == (len(slots), 0), pinned
        # a slowed copy holds the channel's slot (the publisher's pin) until done;
        # the last frame's release travels back asynchronously, so start from 0
        wait_until(lambda: pub.stats()["pins"] == 0)
        fake.set("slow_ms", 150)
        pub.send(random_frame(pub.pool, 40, 20, seed=1))
        cf = sub.try_recv() or sub.recv(timeout=5.0)
        assert isinstance(cf, fcuda.CudaFrame)
        assert pub.stats()["pins"] == 1
        fake.set("slow_ms", 0)
        cf.synchronize(timeout=10)
        wait_until(lambda: pub.stats()["pins"] == 0)
        del cf
        for k in range(2):
            pub.send(random_frame(pub.pool, 40, 20, seed=k))
        got = [next(sub), next(sub)]
        assert all(isinstance(g, fcuda.CudaFrame) for g in got)
        del got
    gc.collect()
    wait_until(lambda: fake.get("readonly_ranges") == ro)


def test_device_keywords_are_checked():
    """Upload keywords without device=, unknown keywords, a bad device or
    device pool: clear errors naming them, before anything starts."""
    with pytest.raises(ValueError, match="format= applies with device= only"):
        framebus.Capture(format="RGB")
    with framebus.Publisher(f"pytest-cuda-nodev-{os.getpid()}") as pub:
        assert framebus.Subscriber(pub.name).pinned is None
    with pytest.raises(ValueError, match="size= applies with device= only"):
        framebus.Subscriber("nobody", size=(2, 2))
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        framebus.Capture(device="cuda:0", colour="RGB")
    with pytest.raises(TypeError, match="device_pool= must be a framebus.cuda.DevicePool"):
        framebus.Subscriber("nobody", device="cuda:0", device_pool=object())
    with pytest.raises(ValueError, match='invalid device="gpu:0"'):
        framebus.Capture(device="gpu:0")
    with pytest.raises(fcuda.CudaUnavailable, match="no CUDA device 7"):
        framebus.Subscriber("nobody", device="cuda:7")
    with pytest.raises(ValueError, match="RGB_F32_CHW"):
        framebus.Capture(device="cuda:0", format="RGB", mean=0.5)


class _TinyTorch:
    """Just enough of torch for ScreenShot.to_torch's CUDA branch: from_dlpack
    calls __dlpack__(stream=) as torch does, and keeps the exporter so the test
    reads the (fake) device memory."""

    class dtype:  # noqa: N801 (torch's name)
        def __init__(self, name, floating):
            self.name, self.is_floating_point = name, floating

    class device:  # noqa: N801
        def __init__(self, spec):
            t, _, i = str(spec).partition(":")
            self.type, self.index = t, int(i) if i else None

    class Tensor:
        def __init__(self, cf, ops=()):
            self.cf, self.ops = cf, ops

        def permute(self, *dims):
            return _TinyTorch.Tensor(self.cf, (*self.ops, ("permute", dims)))

        def to(self, dtype=None, device=None):
            return _TinyTorch.Tensor(self.cf, (*self.ops, ("to", dtype.name)))

        def div_(self, v):
            self.ops = (*self.ops, ("div", v))
            return self

    class cuda:  # noqa: N801
        @staticmethod
        def current_device():
            return 0

    def __init__(self):
        self.uint8 = self.dtype("uint8", False)
        self.float32 = self.dtype("float32", True)
        self.float16 = self.dtype("float16", True)
        self.float64 = self.dtype("float64", True)
        self.capsules = []

    def get_default_dtype(self):
        return self.float32

    def from_dlpack(self, obj):
        self.capsules.append(obj.__dlpack__(stream=1))
        return self.Tensor(obj)


def test_mss_to_torch_on_cuda_goes_through_framebus(monkeypatch):
    from framebus.mss.screenshot import ScreenShot

    torch = _TinyTorch()
    monkeypatch.setitem(sys.modules, "torch", torch)
    pool = framebus.FramePool()
    f = random_frame(pool, 24, 16, seed=40)
    shot = ScreenShot.from_size(f, 24, 16)
    waits, launches = fake.get("stream_waits"), fake.get("launches")
    t = shot.to_torch(device="cuda")
    # float32 CHW RGB: one kernel, scaled to [0, 1] there, no torch ops after.
    assert fake.get("launches") == launches + 1 and fake.get("stream_waits") == waits + 1
    assert t.cf.format == "RGB_F32_CHW" and t.ops == ()
    got = np.frombuffer(device_bytes(t.cf), np.float32).reshape(3, 16, 24)
    want = np.asarray(f.convert("RGB")).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    assert np.array_equal(got, want)
    # uint8 HWC BGR: converted on the GPU, handed over as it is.
    t = shot.to_torch("BGR", "HWC", dtype=torch.uint8, device="cuda:0")
    assert t.cf.format == "BGR" and t.ops == ()
    want = np.asarray(f.convert("BGR"))
    assert np.array_equal(np.frombuffer(device_bytes(t.cf), np.uint8).reshape(want.shape), want)
    # float16 CHW BGRA: the slot uploaded as it is, then torch permutes and scales.
    t = shot.to_torch("BGRA", "CHW", dtype=torch.float16, device="cuda")
    assert t.cf.format == "BGRA"
    assert t.ops == (("permute", (2, 0, 1)), ("to", "float16"), ("div", 255.0))


@pytest.mark.parametrize("local", [False, True], ids=["zenoh", "local"])
def test_zenoh_subscriber_on_the_device(local):
    """framebus.zenoh.Subscriber(device=): frames received over Zenoh land in a
    pinned pool, frames of a same-host publisher come through its local channel
    with the publisher's slots pinned read-only; either way CudaFrames equal
    the CPU's conversion of what was sent."""
    fz = pytest.importorskip("framebus.zenoh")
    from zenoh_env import free_port, listen_cfg, pattern, reap, release, start_publisher

    port = free_port()
    key = f"pytest/cuda/zenoh/{os.getpid()}/{port}"
    ranges, ro = fake.get("registered_ranges"), fake.get("readonly_ranges")
    with fz.Subscriber(
        key, config=listen_cfg(port), local=local, device="cuda:0", format="GRAY8"
    ) as sub:
        p = start_publisher(key, port, mode="latest", count=None, period=0.01, local=local)
        try:
            for _ in range(200):
                cf = sub.recv(timeout=20)
                assert isinstance(cf, fcuda.CudaFrame) and (cf.width, cf.height) == (64, 48)
                if sub.route == ("local" if local else "zenoh"):
                    break
            for _ in range(3):
                cf = sub.recv(timeout=20)
                host = framebus.FramePool().acquire(64, 48, "BGRA")
                np.asarray(host)[...] = pattern(cf.seq - 1, (48, 64, 4))
                want = np.asarray(host.convert("GRAY8"))
                got = np.frombuffer(device_bytes(cf), np.uint8).reshape(want.shape)
                assert np.array_equal(got, want), cf.seq
            if local:
                assert fake.get("readonly_ranges") > ro  # the publisher's slots
            else:
                assert sub.pool.stats()["pinned_slots"] >= 1
                assert fake.get("registered_ranges") > ranges
            del cf
            release(p)
        finally:
            reap(p, ok=False)
