"""framebus.mss speaks the mss 11 API (as mss main's screenshot.py, base.py,
models.py and tools.py): to_numpy/to_pil/to_torch/to_tensorflow, memoryview
bgra/rgb, immutable Monitor, Region, primary_monitor, performance_status,
backend=. Pixels are checked exactly against a known pattern, with the
reference computed the way mss 11 computes it (NumPy indexing, astype, /255)."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import framebus.mss as fmss
import numpy as np
import pytest
from framebus import _framebus
from framebus.mss.models import Monitor, Region
from framebus.mss.tools import parse_edid

W, H = 1920, 1080
ORDER = {"BGRA": [0, 1, 2, 3], "BGR": [0, 1, 2], "RGB": [2, 1, 0], "RGBA": [2, 1, 0, 3]}


def pattern(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    out = np.zeros((height, width, 4), np.uint8)
    out[..., 0] = (x * 7 + y) & 0xFF
    out[..., 1] = (y * 5) & 0xFF
    out[..., 2] = (x + 3 * y) & 0xFF
    return out


@pytest.fixture(scope="module")
def screen(xvfb):
    _framebus._test_put_image(xvfb.display, 0, 0, W, H, pattern(W, H).tobytes())
    return xvfb


@pytest.fixture
def sct(screen):
    with fmss.MSS(display=screen.display) as s:
        yield s


BOX = {"left": 101, "top": 37, "width": 67, "height": 29}


def expected(channels: str, layout: str, dtype=None, alpha: int = 0) -> np.ndarray:
    """What mss 11's to_numpy returns for BOX of the pattern (its own recipe)."""
    bgra = pattern(W, H)[37:66, 101:168].copy()
    bgra[..., 3] = alpha
    rv = bgra[..., ORDER[channels]]
    if layout == "CHW":
        rv = rv.transpose(2, 0, 1)
    if dtype is not None and np.dtype(dtype) != np.uint8:
        rv = rv.astype(dtype)
        if np.issubdtype(np.dtype(dtype), np.floating):
            rv /= 255.0
    return rv


@pytest.mark.parametrize("dtype", [None, np.uint8, np.float32, np.float64, np.float16, np.int32])
@pytest.mark.parametrize("layout", ["HWC", "CHW", "chw"])
@pytest.mark.parametrize("channels", ["BGRA", "BGR", "RGB", "RGBA", "rgb"])
def test_to_numpy_is_pixel_exact(sct, channels, layout, dtype):
    shot = sct.grab(BOX)
    got = shot.to_numpy(channels, layout, dtype)
    want = expected(channels.upper(), layout.upper(), dtype, alpha=np.asarray(shot)[0, 0, 3])
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_to_numpy_defaults_and_zero_copy(sct):
    shot = sct.grab(BOX)
    rgb = shot.to_numpy()
    assert rgb.shape == (29, 67, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    # BGRA is the captured slot itself (read-only); other orders live in a converted slot
    bgra = shot.to_numpy("BGRA")
    assert bgra.ctypes.data == shot.frame.address and not bgra.flags.writeable
    chw = shot.to_numpy("BGRA", "CHW")
    assert chw.ctypes.data == shot.frame.address and chw.shape == (4, 29, 67)
    # float32 CHW RGB/BGR: one to_tensor pass into a contiguous planar array
    for ch in ("RGB", "BGR"):
        t = shot.to_numpy(ch, "CHW", np.float32)
        assert t.flags.c_contiguous and t.shape == (3, 29, 67)


def test_to_numpy_from_bytes_matches(sct):
    data = bytearray(pattern(5, 3).tobytes())
    shot = fmss.ScreenShot.from_size(data, 5, 3)
    np.testing.assert_array_equal(shot.to_numpy("RGB"), pattern(5, 3)[..., [2, 1, 0]])
    np.testing.assert_array_equal(
        shot.to_numpy("BGR", "CHW", "float32"),
        pattern(5, 3)[..., :3].transpose(2, 0, 1).astype(np.float32) / np.float32(255),
    )
    assert shot.to_numpy("BGRA").flags.writeable  # a view of the caller's bytearray, as mss


def test_to_numpy_rejects_bad_arguments(sct):
    shot = sct.grab((0, 0, 2, 2))
    with pytest.raises(ValueError, match='Channels must be "BGRA", "BGR", "RGB", or "RGBA"'):
        shot.to_numpy("ARGB")
    with pytest.raises(ValueError, match='Layout must be "HWC" or "CHW"'):
        shot.to_numpy(layout="WHC")


def test_bgra_rgb_are_memoryviews_and_raw_is_deprecated(sct):
    shot = sct.grab(BOX)
    assert isinstance(shot.bgra, memoryview) and isinstance(shot.rgb, memoryview)
    assert shot.bgra.readonly  # the pool slot the X server wrote, not a copy
    assert shot.rgb is shot.rgb  # cached
    assert bytes(shot.rgb) == expected("RGB", "HWC").tobytes()
    with pytest.warns(DeprecationWarning, match="Use bgra instead"):
        assert shot.raw == shot.bgra


def test_short_buffer_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"32 bytes for 1024x768 BGRA \(3145728 expected\)"):
        fmss.ScreenShot.from_size(bytearray(32), 1024, 768)


def test_to_pil(sct):
    Image = pytest.importorskip("PIL.Image")
    shot = sct.grab(BOX)
    rgb = shot.to_pil()
    assert isinstance(rgb, Image.Image) and rgb.mode == "RGB" and rgb.size == shot.size
    np.testing.assert_array_equal(np.asarray(rgb), expected("RGB", "HWC"))
    rgba = shot.to_pil("rgba")
    assert rgba.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(rgba)[..., :3], expected("RGB", "HWC"))
    with pytest.raises(ValueError, match="Mode must be 'RGB' or 'RGBA'"):
        shot.to_pil("L")


def test_to_torch(sct):
    torch = pytest.importorskip("torch")
    shot = sct.grab(BOX)
    t = shot.to_torch()
    assert t.dtype == torch.get_default_dtype() and tuple(t.shape) == (3, 29, 67)
    np.testing.assert_array_equal(t.numpy(), expected("RGB", "CHW", np.float32))
    u = shot.to_torch("BGRA", "HWC", torch.uint8)
    np.testing.assert_array_equal(u.numpy(), expected("BGRA", "HWC", alpha=u[0, 0, 3].item()))
    b = shot.to_torch("RGB", "CHW", torch.bfloat16)
    assert b.dtype == torch.bfloat16
    with pytest.raises(TypeError, match="must be a torch.dtype"):
        shot.to_torch(dtype=np.float32)
    if torch.cuda.is_available():
        g = shot.to_torch(device="cuda")
        assert g.device.type == "cuda"
        np.testing.assert_array_equal(g.cpu().numpy(), expected("RGB", "CHW", np.float32))


def test_to_tensorflow(sct):
    tf = pytest.importorskip("tensorflow")
    shot = sct.grab(BOX)
    t = shot.to_tensorflow()
    assert t.dtype == tf.float32
    np.testing.assert_allclose(t.numpy(), expected("RGB", "HWC", np.float32), rtol=1e-6)


def test_frameworks_missing_name_themselves(sct, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_frameworks(name, *args, **kwargs):
        if name.split(".")[0] in ("torch", "tensorflow"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_frameworks)
    shot = sct.grab((0, 0, 2, 2))
    with pytest.raises(ImportError, match="to_torch\\(\\) needs 'torch'"):
        shot.to_torch()
    with pytest.raises(ImportError, match="to_tensorflow\\(\\) needs 'tensorflow'"):
        shot.to_tensorflow()


def test_monitor_is_immutable_and_reads_both_ways(sct):
    mon = sct.monitors[1]
    assert isinstance(mon, Monitor)
    assert (mon.left, mon.top, mon.width, mon.height) == (0, 0, W, H)
    assert mon["width"] == W and mon.is_primary is mon["is_primary"]
    assert mon.name is None and mon["unique_id"] is None  # not known: None (mss 11)
    with pytest.raises(KeyError):
        mon["colour"]
    assert "left" in mon and mon == {**mon}  # still the dict mss 10 returned
    with pytest.raises(dataclasses.FrozenInstanceError):
        mon.left = 5
    with pytest.raises(TypeError, match="immutable"):
        mon["left"] = 5
    with pytest.raises(TypeError, match="immutable"):
        mon.update(left=5)
    assert mon.as_region() == Region(0, 0, W, H)
    assert hash(mon) == hash(Monitor(**{**mon}))
    assert pickle.loads(pickle.dumps(mon)) == mon and copy.deepcopy(mon) is mon
    assert sct.monitors[0].is_primary is None and sct.monitors[0] == {
        "left": 0,
        "top": 0,
        "width": W,
        "height": H,
    }


def test_primary_monitor(sct):
    primary = sct.primary_monitor
    assert primary in sct.monitors[1:]
    assert primary.is_primary or primary == sct.monitors[1]


def test_grab_accepts_monitor_region_dict_and_box(sct):
    want = expected("BGRA", "HWC")[..., :3]
    for region in (
        Monitor(101, 37, 67, 29),
        Region(101, 37, 67, 29),
        dict(BOX),
        (101, 37, 168, 66),
    ):
        shot = sct.grab(region)
        assert (shot.left, shot.top, shot.width, shot.height) == (101, 37, 67, 29)
        np.testing.assert_array_equal(shot.to_numpy("BGR"), want)
    with pytest.raises(fmss.ScreenShotError, match="zero or negative size: Region"):
        sct.grab(Region(0, 0, 0, 5))


def test_performance_status_and_backends(screen):
    for backend in ("default", "xshmgetimage", "XSHMGETIMAGE", "xlib"):
        with fmss.MSS(display=screen.display, backend=backend) as s:
            s.grab((0, 0, 4, 4))
            assert s.performance_status == ["MIT-SHM is working correctly."]
    with fmss.MSS(display=screen.display, backend="xgetimage") as s:
        np.testing.assert_array_equal(s.grab(BOX).to_numpy("BGR"), expected("BGR", "HWC"))
        assert s.performance_status and "MIT-SHM is not used" in s.performance_status[0]
    with pytest.raises(fmss.ScreenShotError, match=r"Backend 'gdi' not \(yet\?\) implemented"):
        fmss.MSS(display=screen.display, backend="gdi")


def test_save_templates_have_mss11_fields(screen, sct, tmp_path):
    name = sct.shot(output=str(tmp_path / "{mon}-{is_primary}-{name}-{output}.png"))
    mon = sct.monitors[1]
    assert name.endswith(f"1-{mon.is_primary}-None-{mon.output}.png")
    with fmss.MSS(display=screen.display, compression_level=42) as bad:
        with pytest.raises(Exception, match="Bad compression level"):  # zlib's error, as mss
            bad.shot(output=str(tmp_path / "x.png"))


def _edid(**fields) -> bytes:
    data = bytearray(128)
    data[0:8] = b"\x00\xff\xff\xff\xff\xff\xff\x00"
    data[8:10] = (((ord("D") - 64) << 10) | ((ord("E") - 64) << 5) | (ord("L") - 64)).to_bytes(
        2, "big"
    )
    data[10:12] = (0xA0B1).to_bytes(2, "little")
    data[12:16] = fields.get("serial", 0).to_bytes(4, "little")
    data[16], data[17] = fields.get("week", 0), fields.get("year", 30)
    for offset, tag, text in fields.get("descriptors", ()):
        data[offset + 3] = tag
        data[offset + 5 : offset + 18] = (text.encode() + b"\n").ljust(13, b" ")
    data[127] = (-sum(data[:127])) % 256
    return bytes(data)


def test_parse_edid():
    assert parse_edid(b"\x00" * 127) == {}
    bad = bytearray(_edid())
    bad[127] ^= 1
    assert parse_edid(bytes(bad)) == {}
    assert parse_edid(_edid()) == {"id_legacy": "DELA0B1", "manufacture_year": 2020}
    assert parse_edid(_edid(week=0xFF, year=31, serial=7)) == {
        "id_legacy": "DELA0B1",
        "model_year": 2021,
        "serial_number": 7,
    }
    got = parse_edid(
        _edid(serial=9, week=3, descriptors=[(0x48, 0xFF, "SN1"), (0x5A, 0xFC, "U2720Q")])
    )
    assert got["serial_number"] == "SN1" and got["display_name"] == "U2720Q"
    assert got["manufacture_week"] == 3
