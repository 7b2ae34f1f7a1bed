"""Incremental capture (XDamage) under Xvfb: every incremental frame is pixel-exact
against a full grab made right after it, through thousands of random drawings,
scrolls, window moves and screen resizes, across slot reuse and pool trims; every
frame's ``damage`` covers each pixel that changed since the previous frame;
``Capture(on_change=True)`` delivers only changes."""

from __future__ import annotations

import random
import time

import framebus
import numpy as np
import pytest
from framebus import _framebus
from framebus.capture import Capture, Grabber

W, H = 400, 300


def rgb(frame) -> np.ndarray:
    """The frame's B, G, R bytes (a depth-24 screen leaves the 4th byte undefined)."""
    return np.array(np.asarray(frame)[..., :3])


def put(display: str, rng: random.Random, w: int, h: int, max_side: int) -> None:
    rw, rh = rng.randint(1, min(max_side, w)), rng.randint(1, min(max_side, h))
    left, top = rng.randint(0, w - rw), rng.randint(0, h - rh)
    data = rng.randbytes(rw * rh * 4)
    _framebus._test_put_image(display, left, top, rw, rh, data)


def uncovered(prev: np.ndarray, cur: np.ndarray, damage) -> np.ndarray:
    """Pixels that changed but lie in no damage rectangle."""
    changed = (prev != cur).any(axis=2)
    for left, top, width, height in damage:
        changed[top : top + height, left : left + width] = False
    return np.argwhere(changed)


def test_incremental_frames_equal_full_grabs_through_random_changes(xvfb_factory):
    x = xvfb_factory(W, H)
    d = x.display
    rng = random.Random(20261121)
    _framebus._test_put_image(d, 0, 0, W, H, rng.randbytes(W * H * 4))
    pool = framebus.FramePool()
    g = Grabber(d, pool=pool, incremental=True)
    assert g.incremental
    ref = Grabber(d)
    sizes = [(W, H), (360, 280), (W, H), (320, 240)]
    size_i = 0
    w, h = W, H
    window = None
    held: list = []
    previous = None
    frames, resizes, trims = 0, 0, 0
    deadline = time.monotonic() + 30
    while frames < 3000 and time.monotonic() < deadline:
        op = rng.randrange(100)
        if op < 45:
            put(d, rng, w, h, 90)
        elif op < 55:
            put(d, rng, w, h, w)  # a large change
        elif op < 65:
            rw, rh = rng.randint(1, w), rng.randint(1, h)
            sx, sy = rng.randint(0, w - rw), rng.randint(0, h - rh)
            _framebus._test_copy_area(
                d, sx, sy, rw, rh, rng.randint(0, w - rw), rng.randint(0, h - rh)
            )
        elif op < 75:
            rw, rh = rng.randint(1, 150), rng.randint(1, 150)
            window = _framebus._test_window(
                d, window, rng.randint(0, w - 1), rng.randint(0, h - 1), rw, rh, rng.getrandbits(24)
            )
        elif op < 77 and window is not None:
            _framebus._test_window(d, window, 0, 0, 1, 1, destroy=True)
            window = None
        elif op < 78:
            size_i = (size_i + 1) % len(sizes)
            want_size = sizes[size_i]
            # xrandr --fb resizes Xvfb's screen, then fails to fit its CRTC (exit 1).
            x.run("xrandr", "--fb", "{}x{}".format(*want_size))
            # The grabber sees the new size at its next grab (RandR event).
            limit = time.monotonic() + 5
            while g.screen_size != want_size and time.monotonic() < limit:
                time.sleep(0.001)
            assert g.screen_size == want_size
            w, h = want_size
            resizes += 1
        f = g.grab()
        want = ref.grab()
        cur = rgb(f)
        assert cur.shape == (h, w, 3)
        mismatch = np.argwhere((cur != rgb(want)).any(axis=2))
        assert len(mismatch) == 0, (
            f"frame {frames}: {len(mismatch)} pixels differ, first {mismatch[:3]}"
        )
        damage = f.damage
        assert damage is not None
        if previous is not None and previous.shape == cur.shape:
            bad = uncovered(previous, cur, damage)
            assert len(bad) == 0, f"frame {frames}: changed outside damage {damage}: {bad[:3]}"
        else:
            assert damage == [(0, 0, w, h)]
        previous = cur
        frames += 1
        # Hold some frames a while, so slots come back out of order.
        if rng.random() < 0.3:
            held.append(f)
        if held and (len(held) > 5 or rng.random() < 0.2):
            held.pop(rng.randrange(len(held)))
        if rng.random() < 0.02:
            pool.trim()
            trims += 1
    partial, full = g.grab_counts
    assert frames >= 1000, frames
    assert partial > frames // 3, (partial, full)
    assert resizes > 0 and trims > 0


def test_frames_of_other_grabs_have_no_damage(xvfb_factory):
    x = xvfb_factory(64, 48)
    assert Grabber(x.display).grab().damage is None
    assert framebus.grab(display=x.display).damage is None
    f = Grabber(x.display, incremental=True).grab()
    assert f.damage == [(0, 0, 64, 48)]
    f.release()
    with pytest.raises(ValueError, match="released"):
        _ = f.damage


def test_on_change_capture_delivers_only_changes(xvfb_factory):
    x = xvfb_factory(64, 48)
    with Capture(display=x.display, target_fps=None, incremental=True, on_change=True) as cap:
        first = cap.next(timeout=5)
        assert first.damage == [(0, 0, 64, 48)]
        with pytest.raises(TimeoutError):
            cap.next(timeout=0.2)
        assert cap.stats["unchanged"] > 0
        _framebus._test_put_image(x.display, 5, 7, 10, 3, bytes(range(120)))
        f = cap.next(timeout=5)
        assert f.damage == [(5, 7, 10, 3)]
        assert rgb(f)[7, 5].tolist() == [0, 1, 2]
        assert cap.captured == 2


def test_capture_damage_covers_frames_dropped_in_between(xvfb_factory):
    x = xvfb_factory(96, 64)
    rng = random.Random(7)
    with Capture(display=x.display, target_fps=500, buffer=2, incremental=True) as cap:
        prev = rgb(cap.latest(timeout=5))
        for i in range(60):
            for _ in range(rng.randint(1, 4)):
                put(x.display, rng, 96, 64, 30)
            time.sleep(rng.choice([0, 0.002, 0.01]))  # let frames be dropped
            f = cap.latest(timeout=5)
            cur = rgb(f)
            bad = uncovered(prev, cur, f.damage)
            assert len(bad) == 0, f"step {i}: {bad[:3]} outside {f.damage}"
            prev = cur
        assert cap.dropped > 0
