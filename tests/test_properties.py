"""Property-based tests of the public Python API (hypothesis).

Random sizes, formats, strides, dtypes, ndim, timeouts, counts, `out=` arrays
and environment values: every call either gives a correct result or raises
ValueError / TypeError / OverflowError / BufferError whose message names the
argument — never pyo3's PanicException (a BaseException), a crash, a hang
(each example runs under an alarm) or a silently reinterpreted result.
Example counts are bounded so the suite stays fast in CI.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
import framebus  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from signals import time_limit  # noqa: E402

ALLOWED = (ValueError, TypeError, OverflowError, BufferError)
FORMATS = framebus.formats()
common = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def outcome(fn, *args, **kwargs):
    """(result, None) or (None, exception); anything but an allowed exception
    (a panic, a hang) fails the test."""
    with time_limit(10.0):
        try:
            return fn(*args, **kwargs), None
        except ALLOWED as e:
            assert str(e), f"{type(e).__name__} without a message"
            return None, e


ints = st.one_of(
    st.integers(-3, 70),
    st.sampled_from([0, -1, 2**31, 2**32 + 1, 2**63, 2**64, -(2**63), 2**100]),
)
timeouts = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 0.0, -0.0, 1e-300, 1e19, 1e300, -1, float("nan"), float("inf")]),
)
formats = st.one_of(st.sampled_from(FORMATS), st.sampled_from(["", "bgra8", "RGB24", "xyz"]))


@st.composite
def arrays(draw):
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int8, np.float32, np.int64, np.bool_]))
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(1, 12)) for _ in range(ndim))
    a = np.zeros(shape, dtype)
    if draw(st.booleans()) and ndim >= 2:  # a padded or stepped view
        step0 = draw(st.integers(1, 3))
        a = np.zeros((shape[0] * step0,) + shape[1:], dtype)[::step0]
    if draw(st.booleans()) and ndim >= 2 and shape[1] > 1:
        a = a[:, ::2]  # a pixel step: not supported
    return a


def bytes_per_pixel(fmt):
    return framebus.image_nbytes(1, 1, fmt)


def assert_read_as_is(a, fmt, r):
    """A successful conversion read `a` as the image its shape describes: its
    rows, its bytes per row, every pixel contiguous — nothing reinterpreted."""
    assert a.dtype.kind in "ui" and a.ndim in (2, 3), (a.shape, a.dtype, fmt)
    assert a.strides[-1] == a.itemsize, "a pixel step was accepted"
    row_bytes = int(np.prod(a.shape[1:])) * a.itemsize
    if fmt in ("NV12", "I420"):
        assert (r.width, r.height) == (row_bytes, a.shape[0] * 2 // 3)
        return
    bpp = bytes_per_pixel(fmt)
    assert r.height == a.shape[0] and r.width * bpp == row_bytes, (a.shape, fmt, r.width)
    if a.ndim == 3:
        assert a.shape[2] * a.itemsize == bpp, (a.shape, a.dtype, fmt)
        assert a.strides[1] == bpp


@common
@given(a=arrays(), src=formats, dst=formats)
def test_convert_gives_the_right_image_or_a_clear_error(a, src, dst):
    r, e = outcome(framebus.convert, a, src, dst)
    if e is None:
        assert_read_as_is(a, src, r)
        assert r.format == dst


@common
@given(
    w=ints,
    h=ints,
    out_shape=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    out_dtype=st.sampled_from([np.uint8, np.uint16, np.float32]),
)
def test_resize_into_out_is_exactly_the_size_asked_for(w, h, out_shape, out_dtype):
    src = np.arange(24 * 32 * 4, dtype=np.uint32).astype(np.uint8).reshape(24, 32, 4)
    out = np.zeros(tuple(out_shape), out_dtype)
    r, e = outcome(framebus.resize, src, w, h, src_format="BGRA", out=out)
    if e is None:
        assert r is out
        assert out.dtype == np.uint8 and out.shape == (h, w, 4), (w, h, out.shape)
    else:
        msg = str(e)
        assert any(k in msg for k in ("width", "height", "out", "shape")), msg


@common
@given(w=ints, h=ints, fmt=formats, stride=st.one_of(st.none(), ints), timeout=timeouts)
def test_acquire_gives_the_frame_asked_for_or_names_the_argument(w, h, fmt, stride, timeout):
    pool = framebus.FramePool(max_bytes=64 << 20)
    r, e = outcome(pool.acquire, w, h, fmt, stride=stride, timeout=timeout)
    if e is None:
        assert (r.width, r.height) == (w, h) and r.format in FORMATS
        if fmt.upper() in FORMATS:  # (other accepted names are aliases, e.g. RGB24)
            assert r.format == fmt.upper()
        if stride is not None:
            assert r.stride == stride
    else:
        msg = str(e)
        assert any(
            k in msg for k in ("width", "height", "format", "stride", "timeout", "max_bytes")
        ), msg


@common
@given(
    buffer=ints,
    fps=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
def test_capture_arguments_never_panic(buffer, fps):
    # No display is needed to see the arguments refused: a valid pair then fails
    # (or succeeds) on the display, which is a CaptureError/ValueError, not a panic.
    with time_limit(10.0):
        try:
            cap = framebus.Capture(
                region=(0, 0, 4, 4), target_fps=fps, buffer=buffer, display=":999"
            )
        except (ValueError, TypeError, OverflowError, framebus.CaptureError) as e:
            assert str(e)
        else:  # pragma: no cover - there is no display :999
            cap.stop()


@common
@given(timeout=timeouts, spin=st.one_of(st.floats(allow_nan=True), st.sampled_from(["auto", "x"])))
def test_channel_timeouts_and_spins_never_panic_or_hang(timeout, spin):
    name = f"fb-prop-{uuid.uuid4().hex[:8]}"
    with framebus.Publisher(name) as pub:
        sub, e = outcome(framebus.Subscriber, name, timeout=1.0, spin=spin)
        if e is not None:
            assert "spin" in str(e)
            return
        with sub:
            f = pub.acquire(8, 8)
            np.asarray(f)[:] = 5
            pub.send(f)
            # a frame is waiting, so any valid timeout returns at once
            r, e = outcome(sub.recv, timeout=timeout)
            if e is None:
                assert (np.asarray(r) == 5).all()
            else:
                assert "timeout" in str(e)
                assert timeout is not None and (math.isnan(timeout) or timeout < 0)


@settings(max_examples=8, deadline=None)
@given(
    value=st.one_of(
        st.integers(-5, 2**70).map(str),
        st.text(alphabet="abc-+. 0x", min_size=1, max_size=6),
    )
)
def test_environment_values_are_used_or_refused_by_name(value):
    code = (
        "import os, framebus\n"
        "r, w = os.pipe()\n"
        "try:\n"
        "    framebus.pipe(b'x' * 16, w); framebus.sync(); print('OK')\n"
        "except ValueError as e:\n"
        "    print('ValueError:', e)\n"
    )
    env = dict(os.environ, FRAMEBUS_PIPE_DEPTH=value)
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout.strip()
    stripped = value.strip()
    valid = stripped.isdigit() and 1 <= int(stripped) <= 4096
    if valid or stripped == "":
        assert out == "OK", out
    else:
        assert out.startswith("ValueError") and "FRAMEBUS_PIPE_DEPTH" in out, out
