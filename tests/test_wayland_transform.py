"""Rotated and flipped outputs under headless sway: frames come upright, pixel-exact vs grim.

wlroots hands screencopy buffers in the output's own orientation; framebus turns them
upright (all eight wl_output transforms), like grim, which composes outputs upright. Regions
on a turned output are cut from the whole output (wlroots 0.15 maps a 90°/270° region box
the wrong way round), so they match grim's `-g` too.
"""

from __future__ import annotations

import numpy as np
import pytest
from framebus import Capture, Grabber, Region
from wayland import Sway, pattern_rgb, require_sway, wait_for

TRANSFORMS = ["90", "180", "270", "flipped", "flipped-90", "flipped-180", "flipped-270", "normal"]


def rgb(frame) -> np.ndarray:
    return np.asarray(frame)[..., [2, 1, 0]]


@pytest.fixture(scope="module")
def turned():
    require_sway()
    s = Sway(320, 240)
    # An asymmetric picture: any wrong turn or mirror changes it.
    s.show_image(s.output, pattern_rgb(0, 0, 320, 240))
    yield s
    s.stop()


def set_transform(s: Sway, transform: str) -> tuple[int, int]:
    s.swaymsg("output", s.output, "transform", transform)
    want = (240, 320) if transform.endswith(("90", "270")) else (320, 240)

    def logical() -> bool:
        r = s.output_rect(s.output)
        return (r[2], r[3]) == want

    wait_for(logical, 10, f"sway to turn {s.output} {transform}")
    # The background is redrawn for the new size: wait until two grims agree.
    wait_for(lambda: np.array_equal(s.grim(), s.grim()), 10, "a settled picture")
    return want


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_turned_outputs_are_upright_and_pixel_exact(turned, transform):
    w, h = set_transform(turned, transform)
    with Grabber(turned.socket) as g:
        mon = g.monitors[1]
        assert (mon["width"], mon["height"]) == (w, h)
        assert (mon["physical_width"], mon["physical_height"]) == (320, 240)
        f = g.grab()
        assert f.shape == (h, w, 4)
        np.testing.assert_array_equal(rgb(f), turned.grim())
        # A region off every edge's centre, and the bottom-right corner.
        for left, top, rw, rh in [(10, 20, 100, 50), (w - 30, h - 20, 30, 20)]:
            r = g.grab(Region(left, top, rw, rh))
            np.testing.assert_array_equal(rgb(r), turned.grim(region=(left, top, rw, rh)))


def test_on_change_damage_on_a_turned_output_is_upright(turned):
    w, h = set_transform(turned, "90")
    with Capture(display=turned.socket, target_fps=None, on_change=True) as cap:
        prev = rgb(cap.next(timeout=5)).copy()
        turned.set_bg(turned.output, "#ff0000")
        f = cap.next(timeout=5)
        cur = rgb(f)
        changed = (prev != cur).any(axis=2)
        for left, top, dw, dh in f.damage:
            assert 0 <= left and 0 <= top and left + dw <= w and top + dh <= h, f.damage
            changed[top : top + dh, left : left + dw] = False
        assert not changed.any(), f"changed outside damage {f.damage}"
    set_transform(turned, "normal")
