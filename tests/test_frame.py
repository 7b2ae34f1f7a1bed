"""End-to-end tests of the foundation: FramePool, Frame exports and lifetime tracking."""

import ctypes
import gc
import hashlib
import subprocess
import sys
import textwrap
import threading
import time

import framebus
import numpy as np
import pytest
from framebus import FramePool, PoolExhausted

W, H = 64, 48
# numpy >= 2.1 asks producers for versioned DLPack (max_version=(1, 0)) and takes copy=;
# older numpy (the last one for Python 3.9 is 2.0) only speaks legacy DLPack.
NUMPY_DLPACK_1 = np.lib.NumpyVersion(np.__version__) >= "2.1.0"


def one_slot_pool():
    """A pool that can hold exactly one slot, so reuse is observable as success/failure."""
    return FramePool(max_slots=1, on_exhausted="raise")


def assert_slot_busy(pool):
    with pytest.raises(PoolExhausted, match="max_slots=1"):
        pool.acquire(W, H)


def assert_slot_free(pool, slot_id):
    f = pool.acquire(W, H)
    assert f.slot_id == slot_id, "the freed slot must be the one reused"
    f.release()


# ---------------------------------------------------------------- zero-copy exports


def test_numpy_view_shares_the_slot():
    pool = FramePool()
    f = pool.acquire(1920, 1080, "BGRA")
    a = np.asarray(f)
    assert a.shape == (1080, 1920, 4) and a.dtype == np.uint8
    assert a.ctypes.data == f.address
    assert a.flags.writeable and not f.readonly
    a[5, 7] = (1, 2, 3, 4)
    assert bytes(np.asarray(memoryview(f))[5, 7]) == b"\x01\x02\x03\x04"


def test_every_export_sees_the_same_memory():
    PIL = pytest.importorskip("PIL.Image")
    f = FramePool().acquire(W, H, "RGBA")
    base = np.asarray(f)
    base[:] = np.arange(W * H * 4, dtype=np.uint32).reshape(H, W, 4).astype(np.uint8)
    mv = memoryview(f)
    assert mv.shape == (H, W, 4) and mv.strides == (W * 4, 4, 1) and mv.format == "B"
    assert np.shares_memory(np.asarray(mv), base)
    dl = np.from_dlpack(f)
    assert dl.ctypes.data == f.address and np.shares_memory(dl, base)
    legacy = np.from_dlpack(_LegacyOnly(f))
    assert legacy.ctypes.data == f.address
    ai = np.asarray(_InterfaceOnly(f))
    assert ai.ctypes.data == f.address and np.array_equal(ai, base)
    img = PIL.frombuffer("RGBA", (W, H), f, "raw", "RGBA", 0, 1)
    base[0, 0] = (9, 8, 7, 6)
    assert img.getpixel((0, 0)) == (9, 8, 7, 6), "Pillow must read the slot itself"


class _InterfaceOnly:
    """Only exposes __array_interface__, so numpy must use it (not the buffer protocol)."""

    def __init__(self, frame):
        self.frame = frame

    @property
    def __array_interface__(self):
        return self.frame.__array_interface__


class _Producer:
    """Hands numpy a capsule made by `make` (to test __dlpack__ arguments on any numpy)."""

    def __init__(self, make):
        self.make = make

    def __dlpack__(self, stream=None, **_):
        return self.make()

    def __dlpack_device__(self):
        return (1, 0)


class _LegacyOnly:
    """A producer whose __dlpack__ ignores max_version, as pre-2023 callers did."""

    def __init__(self, frame):
        self.frame = frame

    def __dlpack__(self, stream=None, **_):
        return self.frame.__dlpack__(stream=stream)

    def __dlpack_device__(self):
        return self.frame.__dlpack_device__()


@pytest.mark.parametrize(
    "fmt,shape,dtype",
    [
        ("BGRA", (H, W, 4), np.uint8),
        ("BGRX", (H, W, 4), np.uint8),
        ("RGBA", (H, W, 4), np.uint8),
        ("RGB", (H, W, 3), np.uint8),
        ("BGR", (H, W, 3), np.uint8),
        ("GRAY8", (H, W), np.uint8),
        ("GRAY16", (H, W), np.uint16),
        ("RGBA16", (H, W, 4), np.uint16),
        ("NV12", (H * 3 // 2, W), np.uint8),
        ("I420", (H * 3 // 2, W), np.uint8),
    ],
)
def test_formats_have_correct_shape_dtype_and_dlpack(fmt, shape, dtype):
    f = FramePool().acquire(W, H, fmt)
    a = np.asarray(f)
    assert a.shape == shape and a.dtype == dtype and f.format == fmt
    a[...] = np.arange(a.size, dtype=np.uint64).reshape(shape).astype(dtype)
    d = np.from_dlpack(f)
    assert d.shape == shape and d.dtype == dtype and d.strides == a.strides
    assert np.array_equal(d, a)
    ai = np.asarray(_InterfaceOnly(f))
    assert ai.dtype == dtype and np.array_equal(ai, a)


def test_padded_stride_is_exposed_with_strides():
    f = FramePool().acquire(5, 3, "RGB", stride=20)
    a = np.asarray(f)
    assert a.shape == (3, 5, 3) and a.strides == (20, 3, 1)
    a[2, 4] = (1, 2, 3)
    flat = np.frombuffer(memoryview(f).tobytes(), np.uint8)
    assert flat.size == 45  # tobytes() drops the padding
    d = np.from_dlpack(f)
    assert d.strides == (20, 3, 1) and tuple(d[2, 4]) == (1, 2, 3)
    g = FramePool().acquire(5, 3, "GRAY16", stride=12)
    assert np.from_dlpack(g).strides == (12, 2)
    assert bytes(f) == memoryview(f).tobytes()  # bytes() asks for strides: fine
    with pytest.raises(BufferError, match="stride 20 > row 15"):
        hashlib.sha256(f)  # PyBUF_SIMPLE cannot describe padded rows


def test_readonly_frames_refuse_writes_everywhere():
    f = FramePool().acquire(W, H)
    np.asarray(f)[:] = 3
    ro = f.as_readonly()
    assert ro.readonly and ro.address == f.address
    a = np.asarray(ro)
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a[0, 0, 0] = 1
    with pytest.raises(TypeError, match="read-only"):
        memoryview(ro)[0:1] = memoryview(ro)[1:2]
    get_buffer = ctypes.pythonapi.PyObject_GetBuffer
    get_buffer.argtypes = [ctypes.py_object, ctypes.c_void_p, ctypes.c_int]
    view = ctypes.create_string_buffer(256)  # room for a Py_buffer
    with pytest.raises(BufferError, match="read-only"):
        get_buffer(ro, view, 0x0001)  # PyBUF_WRITABLE
    d = np.from_dlpack(ro)
    if NUMPY_DLPACK_1:  # versioned DLPack carries the read-only flag: zero-copy
        assert d.ctypes.data == f.address and not d.flags.writeable
    else:  # legacy DLPack cannot: framebus hands out a copy
        assert d.ctypes.data != f.address and np.all(d == 3)
    # Legacy DLPack cannot say "read-only": a copy by default, an error with copy=False.
    legacy = np.from_dlpack(_LegacyOnly(ro))
    assert legacy.ctypes.data != f.address and np.all(legacy == 3)
    with pytest.raises(BufferError, match="legacy DLPack"):
        ro.__dlpack__(copy=False)
    assert not np.asarray(_InterfaceOnly(ro)).flags.writeable


def test_dlpack_arguments():
    f = FramePool().acquire(W, H)
    np.asarray(f)[:] = 5
    assert f.__dlpack_device__() == (1, 0)
    c = np.from_dlpack(_Producer(lambda: f.__dlpack__(copy=True)))
    assert c.ctypes.data != f.address and np.all(c == 5)
    if NUMPY_DLPACK_1:
        c = np.from_dlpack(f, copy=True)
        assert c.ctypes.data != f.address and np.all(c == 5)
    with pytest.raises(BufferError, match="dl_device"):
        f.__dlpack__(dl_device=(2, 0))
    with pytest.raises(BufferError, match="stream"):
        f.__dlpack__(stream=1)
    cap = f.__dlpack__(max_version=(1, 0))
    assert "dltensor_versioned" in repr(cap)
    assert "dltensor" in repr(f.__dlpack__())


def test_torch_from_dlpack_shares_memory():
    torch = pytest.importorskip("torch")
    pool = one_slot_pool()
    f = pool.acquire(W, H)
    sid = f.slot_id
    t = torch.from_dlpack(f)
    assert t.data_ptr() == f.address and tuple(t.shape) == (H, W, 4)
    del f
    gc.collect()
    assert_slot_busy(pool)
    del t
    gc.collect()
    assert_slot_free(pool, sid)


# ---------------------------------------------------------------- lifetime tracking


def _check_reuse_after_last_export(make_export):
    pool = one_slot_pool()
    f = pool.acquire(W, H)
    sid = f.slot_id
    exports = make_export(f)
    f.release()
    del f
    gc.collect()
    assert_slot_busy(pool)
    del exports[:]
    gc.collect()
    assert_slot_free(pool, sid)


def test_reuse_after_memoryview_slice():
    _check_reuse_after_last_export(lambda f: [memoryview(f)[3:5]])


def test_reuse_after_numpy_view_of_a_view():
    def make(f):
        a = np.asarray(f)
        v = a[1:, ::2][..., 0].T  # a view of a view of a view
        del a
        return [v]

    _check_reuse_after_last_export(make)


def test_reuse_after_pil_image():
    PIL = pytest.importorskip("PIL.Image")
    _check_reuse_after_last_export(
        lambda f: [PIL.frombuffer("RGBA", (W, H), f, "raw", "RGBA", 0, 1)]
    )


def test_reuse_after_np_from_dlpack():
    _check_reuse_after_last_export(lambda f: [np.from_dlpack(f)[2:]])


def test_reuse_after_legacy_dlpack():
    _check_reuse_after_last_export(lambda f: [np.from_dlpack(_LegacyOnly(f))])


def test_reuse_after_unconsumed_dlpack_capsules():
    _check_reuse_after_last_export(lambda f: [f.__dlpack__(), f.__dlpack__(max_version=(1, 0))])


def test_reuse_after_array_interface_consumer():
    _check_reuse_after_last_export(lambda f: [np.asarray(_InterfaceOnly(f))])


def test_frame_object_alone_holds_the_slot():
    pool = one_slot_pool()
    f = pool.acquire(W, H)
    sid = f.slot_id
    assert_slot_busy(pool)
    del f
    assert_slot_free(pool, sid)


def test_released_frame_raises_and_context_manager_releases():
    pool = one_slot_pool()
    with pool.acquire(W, H) as f:
        sid = f.slot_id
        assert not f.released
    assert f.released
    assert_slot_free(pool, sid)
    for use in (
        lambda: np.asarray(f),
        lambda: memoryview(f),
        lambda: f.__dlpack__(),
        lambda: f.__array_interface__,
        lambda: f.copy(),
    ):
        with pytest.raises((ValueError, BufferError), match="released"):
            use()
    f.release()  # idempotent


def test_release_with_array_interface_outstanding_keeps_memory_valid():
    pool = one_slot_pool()
    f = pool.acquire(W, H)
    np.asarray(f)[:] = 42
    a = np.asarray(_InterfaceOnly(f))  # holds the Frame object, not a lease
    f.release()
    assert_slot_busy(pool)  # parked until the Frame object goes
    assert np.all(a == 42)
    del a, f
    gc.collect()
    pool.acquire(W, H)


def test_held_frame_unchanged_after_thousands_of_cycles():
    pool = FramePool(max_slots=4)
    held = pool.acquire(W, H)
    np.asarray(held)[:] = 77
    for i in range(5000):
        f = pool.acquire(W, H)
        np.asarray(f)[:] = i % 251
        assert f.slot_id != held.slot_id
        f.release()
    assert np.all(np.asarray(held) == 77)


def test_copy_is_independent_and_writable():
    f = FramePool().acquire(W, H)
    np.asarray(f)[:] = 1
    c = f.copy()
    assert c.address != f.address and not c.readonly
    np.asarray(c)[:] = 2
    assert np.all(np.asarray(f) == 1)
    assert np.all(f.to_numpy(copy=True) == 1)
    assert np.shares_memory(f.to_numpy(), np.asarray(f))


def test_pool_closed_first_frames_stay_valid():
    pool = FramePool()
    f = pool.acquire(W, H)
    a = np.asarray(f)
    a[:] = 9
    pool.close()
    assert pool.closed
    with pytest.raises(framebus.PoolClosed):
        pool.acquire(W, H)
    assert np.all(a == 9)
    assert pool.stats()["slots"] == 1
    del f, a
    gc.collect()
    assert pool.stats()["slots"] == 0 and pool.stats()["bytes_mapped"] == 0


def test_interpreter_shutdown_with_live_exports_is_clean():
    code = textwrap.dedent(
        """
        import threading, numpy as np, framebus
        pool = framebus.FramePool()
        frames = [pool.acquire(640, 480) for _ in range(4)]
        keep = [np.asarray(frames[0]), memoryview(frames[1]), frames[2].__dlpack__(),
                np.from_dlpack(frames[3])]
        def worker():
            while True:
                f = pool.acquire(64, 64); np.asarray(f)[:] = 1; del f
        threading.Thread(target=worker, daemon=True).start()
        print("ok", flush=True)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((0, 10), {}, "width=0"),
        ((10, -5), {}, "height=-5"),
        ((-1, 1), {}, "width=-1"),
        ((10, 10, "YUYV"), {}, '"YUYV"'),
        ((10, 10, "RGB"), {"stride": 29}, "stride 29"),
        ((10, 10, "GRAY16"), {"stride": 21}, "stride 21"),
        ((3, 4, "NV12"), {}, "width: 3"),
        ((1 << 21, 1), {}, "2097152"),
        ((10, 10), {"stride": 0}, "stride=0"),
        ((10, 10), {"timeout": -1.0}, "timeout=-1"),
    ],
)
def test_bad_input_raises_value_error_naming_the_value(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        FramePool().acquire(*args, **kwargs)


def test_request_over_pool_limit_is_a_value_error():
    pool = FramePool(max_bytes=1 << 20)
    with pytest.raises(ValueError, match=r"max_bytes=1048576"):
        pool.acquire(1920, 1080)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"max_bytes": 0}, "max_bytes=0"),
        ({"max_slots": -3}, "max_slots=-3"),
        ({"on_exhausted": "wait"}, '"wait"'),
        ({"timeout": float("nan")}, "timeout"),
    ],
)
def test_bad_pool_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FramePool(**kwargs)


# ---------------------------------------------------------------- policy at the limit


def test_exhausted_error_names_limit_and_holders():
    pool = FramePool(max_bytes=3 * W * H * 4, on_exhausted="raise")  # 3 slots of exactly 3 pages
    held = [pool.acquire(W, H) for _ in range(3)]
    views = [memoryview(held[0]), memoryview(held[0])]
    with pytest.raises(PoolExhausted) as e:
        pool.acquire(W, H)
    msg = str(e.value)
    assert "max_bytes=" in msg and "3 slots" in msg and "3 holder(s)" in msg, msg
    assert isinstance(e.value, framebus.FramebusError)
    del views, held


def test_block_policy_waits_for_release_then_times_out():
    pool = FramePool(max_slots=1, on_exhausted="block", timeout=5.0)
    f = pool.acquire(W, H)
    sid = f.slot_id
    threading.Timer(0.2, f.release).start()
    t0 = time.monotonic()
    g = pool.acquire(W, H)
    assert 0.15 < time.monotonic() - t0 < 4.0
    assert g.slot_id == sid
    t0 = time.monotonic()
    with pytest.raises(PoolExhausted, match="waited"):
        pool.acquire(W, H, timeout=0.1)
    assert time.monotonic() - t0 >= 0.09
    assert pool.stats()["waits"] == 2


def test_many_threads_no_lost_slot_no_double_use():
    pool = FramePool(max_slots=5, on_exhausted="block", timeout=10)
    live = set()
    lock = threading.Lock()
    errors = []
    stop = time.monotonic() + 2.0
    counts = [0] * 8

    def worker(i):
        try:
            while time.monotonic() < stop:
                f = pool.acquire(W + (i % 2) * 8, H)
                with lock:
                    assert f.slot_id not in live, "double use"
                    live.add(f.slot_id)
                a = np.asarray(f)
                a[:] = i
                time.sleep(0)
                assert np.all(a == i), "another thread wrote into my slot"
                with lock:
                    live.remove(f.slot_id)
                del a
                f.release()
                counts[i] += 1
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    s = pool.stats()
    assert s["slots_in_use"] == 0 and s["slots_free"] == s["slots"] <= 5
    assert s["acquires"] == sum(counts) > 100


# ---------------------------------------------------------------- stats and trim


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_stats_match_reality():
    pool = FramePool()
    page = 4096
    size = ((1920 * 1080 * 4 + page - 1) // page) * page
    frames = [pool.acquire(1920, 1080) for _ in range(3)]
    s = pool.stats()
    assert (s["slots"], s["slots_in_use"], s["bytes_in_use"]) == (3, 3, 3 * size)
    frames.pop().release()
    s = pool.stats()
    assert (s["slots_in_use"], s["slots_free"], s["bytes_free"]) == (2, 1, size)
    assert s["bytes_mapped"] == 3 * size and s["high_water_bytes"] == 3 * size
    assert (s["acquires"], s["maps"], s["reuses"]) == (3, 3, 0)
    pool.acquire(1920, 1080).release()
    assert pool.stats()["reuses"] == 1


def test_trim_gives_memory_back_to_the_os():
    pool = FramePool()
    frames = [pool.acquire(1920, 1080) for _ in range(16)]  # ~133 MB
    for f in frames:
        np.asarray(f)[:] = 1  # fault every page in
    before_hold = _rss_bytes()
    del f
    frames.clear()
    gc.collect()
    assert _rss_bytes() > before_hold - (16 << 20), "free slots stay mapped until trim"
    free_before = pool.stats()["bytes_free"]
    assert free_before == 16 * 8294400
    assert pool.trim() == free_before
    after = _rss_bytes()
    assert before_hold - after > 120_000_000, (before_hold, after)
    assert pool.stats()["bytes_mapped"] == 0


def test_acquire_reuses_most_recently_freed_slot():
    pool = FramePool()
    a, b, c = (pool.acquire(W, H) for _ in range(3))
    ids = [a.slot_id, b.slot_id, c.slot_id]
    b.release()
    a.release()
    c.release()
    order = [pool.acquire(W, H).slot_id for _ in range(1)]
    assert order == [ids[2]]


def test_default_pool_is_shared():
    assert framebus.default_pool().acquire(4, 4).readonly is False
    assert "FramePool(" in repr(framebus.default_pool())
