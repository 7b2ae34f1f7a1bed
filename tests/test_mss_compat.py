"""framebus.mss against real mss 10.2 on the same Xvfb: same monitors, same
pixels, same ScreenShot API, same files, same errors (the mss 11 API is in
tests/test_mss11.py, mss 10.2's own tests in tests/test_mss10_suite.py)."""

from __future__ import annotations

import os
import warnings

import framebus.mss as fmss
import numpy as np
import pytest
from framebus import _framebus
from framebus import mss as fmss_from_package

real_mss = pytest.importorskip("mss")
if getattr(real_mss, "__version__", "") != "10.2.0":  # pragma: no cover
    pytest.skip("comparisons are written against mss 10.2.0", allow_module_level=True)

W, H = 1920, 1080


def pattern(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    out = np.zeros((height, width, 4), np.uint8)
    out[..., 0] = (x * 7) & 0xFF
    out[..., 1] = (y * 5) & 0xFF
    out[..., 2] = (x + y) & 0xFF
    return out


@pytest.fixture(scope="module")
def screen(xvfb):
    img = pattern(W, H)
    _framebus._test_put_image(xvfb.display, 0, 0, W, H, img.tobytes())
    return xvfb


@pytest.fixture
def both(screen):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ours = fmss.MSS(display=screen.display)
        theirs = real_mss.MSS(display=screen.display)
    with ours, theirs:
        yield ours, theirs


REGIONS = [
    {"left": 0, "top": 0, "width": W, "height": H},
    {"left": 0, "top": 0, "width": 1, "height": 1},
    {"left": W - 1, "top": H - 1, "width": 1, "height": 1},
    {"left": 100, "top": 200, "width": 333, "height": 77},
    (10, 20, 110, 70),
]


def test_import_forms(screen):
    assert fmss_from_package is fmss
    assert fmss.__version__ == "11.0.0"  # the mss 11 API, mss 10.2's behaviour where they agree
    for name in real_mss.__all__:
        assert hasattr(fmss, name), name
    assert fmss.exception.ScreenShotError is fmss.ScreenShotError
    assert fmss.models.Size(1, 2).width == 1
    with pytest.warns(DeprecationWarning, match=r"mss\.mss is deprecated"):
        sct = fmss.mss(display=screen.display)
    with sct:
        assert isinstance(sct, fmss.MSS)
        assert sct.grab((0, 0, 2, 2)).size == (2, 2)


def test_monitors_are_identical(both):
    ours, theirs = both
    assert ours.monitors == theirs.monitors
    assert ours.primary_monitor == theirs.primary_monitor


@pytest.mark.parametrize("region", REGIONS, ids=str)
def test_grab_matches_mss(both, region):
    ours, theirs = both
    a, b = ours.grab(region), theirs.grab(region)
    assert (a.pos, a.size, a.left, a.top, a.width, a.height) == (
        b.pos,
        b.size,
        b.left,
        b.top,
        b.width,
        b.height,
    )
    assert repr(a) == repr(b)
    assert a.bgra == b.bgra
    assert a.rgb == b.rgb
    assert bytes(a.bgra) == bytes(b.raw)
    with pytest.warns(DeprecationWarning, match="raw property is deprecated"):
        assert a.raw == b.raw  # mss 11: a deprecated alias of bgra
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.asarray(a).shape == (b.height, b.width, 4)
    for x, y in [(0, 0), (b.width - 1, b.height - 1), (-1, -1), (b.width // 2, 0)]:
        assert a.pixel(x, y) == b.pixel(x, y)


def test_pixels_match_mss(both):
    ours, theirs = both
    region = {"left": 5, "top": 7, "width": 40, "height": 30}
    assert ours.grab(region).pixels == theirs.grab(region).pixels


def test_array_interface_is_zero_copy_onto_the_frame(both):
    ours, _ = both
    shot = ours.grab({"left": 0, "top": 0, "width": 64, "height": 32})
    arr = np.asarray(shot)
    assert arr.ctypes.data == shot.frame.address
    assert arr.shape == (32, 64, 4)
    del shot  # the array keeps the slot alive
    np.testing.assert_array_equal(
        arr, pattern(64, 32) | np.array([0, 0, 0, arr[0, 0, 3]], np.uint8)
    )


@pytest.mark.parametrize(
    "region",
    [
        {"left": W - 10, "top": 0, "width": 11, "height": 1},
        {"left": -1, "top": 0, "width": 10, "height": 10},
        {"left": 0, "top": 0, "width": W + 1, "height": 1},
    ],
    ids=str,
)
def test_out_of_screen_errors_like_mss(both, region):
    ours, theirs = both
    with pytest.raises(real_mss.ScreenShotError) as theirs_err:
        theirs.grab(region)
    with pytest.raises(fmss.ScreenShotError) as ours_err:
        ours.grab(region)
    assert ours_err.value.details["error_code"] == theirs_err.value.details["error_code"]
    assert ours_err.value.details["major_code"] == theirs_err.value.details["major_code"]
    assert "1920x1080" in str(ours_err.value)  # and ours names the bounds


@pytest.mark.parametrize("region", [(0, 0, 0, 10), {"left": 0, "top": 0, "width": 5, "height": -1}])
def test_empty_region_errors_like_mss(both, region):
    ours, theirs = both
    with pytest.raises(real_mss.ScreenShotError) as theirs_err:
        theirs.grab(region)
    with pytest.raises(fmss.ScreenShotError) as ours_err:
        ours.grab(region)
    assert str(ours_err.value) == str(theirs_err.value)


def test_pixel_out_of_range_like_mss(both):
    ours, theirs = both
    a, b = ours.grab((0, 0, 4, 4)), theirs.grab((0, 0, 4, 4))
    for xy in [(4, 0), (0, 4), (-5, 0)]:
        with pytest.raises(real_mss.ScreenShotError) as e1:
            b.pixel(*xy)
        with pytest.raises(fmss.ScreenShotError) as e2:
            a.pixel(*xy)
        assert str(e1.value) == str(e2.value)


def test_closed_and_bad_arguments_like_mss(screen):
    for mod in (fmss, real_mss):
        sct = mod.MSS(display=screen.display)
        sct.close()
        sct.close()
        with pytest.raises(mod.ScreenShotError, match="connection is closed"):
            sct.grab((0, 0, 5, 5))
        with pytest.raises(mod.ScreenShotError, match=r"Backend 'nope' not \(yet\?\) implemented"):
            mod.MSS(backend="nope")


def test_save_and_shot_templates_like_mss(both, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    ours, theirs = both
    for name, sct in (("ours", ours), ("theirs", theirs)):
        d = tmp_path / name
        d.mkdir()
        seen = []
        files = list(
            sct.save(mon=-1, output=str(d / "all-{mon}-{width}x{height}.png"), callback=seen.append)
        )
        files += list(sct.save(mon=0, output=str(d / "mon-{mon}-{left}-{top}.png")))
        files.append(sct.shot(output=str(d / "shot-{mon}.png")))
        assert seen == [files[0]]
        assert [os.path.basename(f) for f in files] == [
            "all-0-1920x1080.png",
            "mon-1-0-0.png",
            "shot-1.png",
        ]
        with pytest.raises(
            real_mss.ScreenShotError if sct is theirs else fmss.ScreenShotError,
            match="Monitor 7 does not exist.",
        ):
            list(sct.save(mon=7))
        dated = sct.shot(output=str(d / "d-{date:%Y}.png"))
        assert os.path.basename(dated).startswith("d-20")
    for f in ("all-0-1920x1080.png", "mon-1-0-0.png", "shot-1.png"):
        with Image.open(tmp_path / "ours" / f) as a, Image.open(tmp_path / "theirs" / f) as b:
            assert a.size == b.size and a.mode == b.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_tools_to_png_is_byte_identical(both, tmp_path):
    ours, _ = both
    shot = ours.grab((0, 0, 50, 40))
    for level in (1, 6, 9):
        assert fmss.tools.to_png(shot.rgb, shot.size, level=level) == real_mss.tools.to_png(
            shot.rgb, shot.size, level=level
        )
    out = tmp_path / "t.png"
    assert fmss.tools.to_png(shot.rgb, shot.size, output=out) is None
    assert out.read_bytes() == real_mss.tools.to_png(shot.rgb, shot.size)


def test_screenshot_from_bytes_like_mss():
    data = bytearray(range(24))
    a = fmss.ScreenShot.from_size(bytearray(data), 3, 2)
    b = real_mss.ScreenShot.from_size(bytearray(data), 3, 2)
    assert (a.rgb, a.bgra, a.pixels, a.size, a.pos) == (b.rgb, b.bgra, b.pixels, b.size, b.pos)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_tcp_display_falls_back_and_reports_it(screen):
    with fmss.MSS(display=screen.tcp_display) as sct:
        shot = sct.grab((0, 0, 16, 16))
        np.testing.assert_array_equal(np.asarray(shot)[..., :3], pattern(16, 16)[..., :3])
        assert "TCP" in sct.performance_status[0]
    with fmss.MSS(display=screen.display) as sct:
        assert sct.performance_status == ["MIT-SHM is working correctly."]


def test_with_cursor_property(screen):
    with fmss.MSS(display=screen.display, with_cursor=True) as sct:
        assert sct.with_cursor
        assert sct.grab((0, 0, 8, 8)).size == (8, 8)
