"""Capture through the ScreenCast portal, end to end: headless sway, a private D-Bus
session bus, PipeWire + WirePlumber, xdg-desktop-portal and xdg-desktop-portal-wlr
(``tests/portal_env.py``), and framebus's portal backend (D-Bus with zbus, libpipewire
loaded at run time) driven through ``examples/portal_grab.rs``.

The program is the example binary that ``cargo test`` builds
(``target/*/examples/portal_grab``; ``FRAMEBUS_PORTAL_GRAB`` names another). It is
built here when missing and cargo is on PATH; otherwise the tests skip, saying so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import portal_env
import pytest
import wayland

ROOT = Path(__file__).resolve().parent.parent
W, H = 640, 480
PICTURE = wayland.pattern_rgb(0, 0, W, H)


def _grab_binary() -> Path:
    env = os.environ.get("FRAMEBUS_PORTAL_GRAB")
    if env:
        return Path(env)
    found = sorted(
        ROOT.glob("target/*/examples/portal_grab"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    if found:
        return found[0]
    if shutil.which("cargo") is None:
        pytest.skip("examples/portal_grab is not built and cargo is not on PATH")
    subprocess.run(
        ["cargo", "build", "-q", "-p", "framebus-capture", "--example", "portal_grab"],
        cwd=ROOT,
        check=True,
        timeout=900,
    )
    return ROOT / "target/debug/examples/portal_grab"


@pytest.fixture(scope="module")
def grab_bin() -> Path:
    return _grab_binary()


@pytest.fixture(scope="module")
def sway():
    wayland.require_sway()
    if portal_env.missing():
        pytest.skip(f"portal stack incomplete: {', '.join(portal_env.missing())} missing")
    with wayland.Sway(W, H) as s:
        s.show_image(s.output, PICTURE)
        yield s


@pytest.fixture()
def stack(sway):
    with portal_env.PortalStack(sway, output=sway.output) as st:
        yield st


def run_grab(
    grab_bin: Path,
    stack,
    tmp_path: Path,
    *args: str,
    env=None,
    poke_every: float = 2.0,
    settle_ms: int = 700,
) -> dict:
    """Run portal_grab under the stack. xdg-desktop-portal-wlr sends a frame only
    when the output is damaged (wlr-screencopy ``copy_with_damage``), and only the
    first session on a fresh portal gets one for free: so while the program waits,
    the same picture is shown again every 2 s (a repaint with identical pixels), and
    the program settles (no new frame for 700 ms) before the grab it writes."""
    out = tmp_path / "frame"
    proc = subprocess.Popen(
        [str(grab_bin), str(out), "--settle", str(settle_ms), *args],
        env=env or stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sway = stack.sway
    try:
        deadline = time.monotonic() + 120
        next_poke = time.monotonic() + 0.5
        while proc.poll() is None and time.monotonic() < deadline:
            if time.monotonic() >= next_poke:
                sway.show_image(sway.output, PICTURE, wait=False)
                next_poke = time.monotonic() + poke_every
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=max(1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    if proc.returncode != 0:
        raise AssertionError(
            f"portal_grab failed ({proc.returncode}): {stderr.decode()}\n"
            f"--- xdpw:\n{stack.log('xdpw')}\n--- xdp:\n{stack.log('xdp')}"
        )
    info = json.loads(stdout.decode().strip().splitlines()[-1])
    info["frame"] = _bgra_to_rgb(
        out.with_suffix(".bgra").read_bytes(), info["width"], info["height"]
    )
    info["crop"] = _bgra_to_rgb(out.with_suffix(".crop.bgra").read_bytes(), 100, 50)
    return info


def _bgra_to_rgb(data: bytes, w: int, h: int) -> np.ndarray:
    return np.frombuffer(data, np.uint8).reshape(h, w, 4)[..., [2, 1, 0]]


def test_portal_capture_is_pixel_exact_to_grim(sway, stack, grab_bin, tmp_path):
    info = run_grab(grab_bin, stack, tmp_path)
    ref = sway.grim(output=sway.output)
    assert (info["width"], info["height"]) == (W, H)
    assert np.array_equal(info["frame"], ref), "portal frame differs from grim"
    assert np.array_equal(info["frame"], wayland.pattern_rgb(0, 0, W, H))
    # a region is cropped from the stream: 10,20 100x50
    assert np.array_equal(info["crop"], ref[20:70, 10:110])


def test_restore_token_is_written_then_reused(sway, stack, grab_bin, tmp_path):
    token = stack.state / "framebus" / "portal-restore-token"
    assert not token.exists()
    first = run_grab(grab_bin, stack, tmp_path)
    assert first["restored"] is False
    assert first["token_path"] == str(token)
    assert token.exists() and oct(token.stat().st_mode & 0o777) == "0o600"
    t1 = token.read_text()
    assert len(t1) > 8
    second = run_grab(grab_bin, stack, tmp_path)
    assert second["restored"] is True, "the saved token was not offered"
    t2 = token.read_text()
    # the spec makes tokens single-use; xdg-desktop-portal 1.16 hands the same one back,
    # and either way the file holds the one returned by the last Start
    assert len(t2) > 8
    assert np.array_equal(second["frame"], sway.grim(output=sway.output))
    # --no-restore neither reads nor writes it
    third = run_grab(grab_bin, stack, tmp_path, "--no-restore")
    assert third["restored"] is False
    assert token.read_text() == t2


def test_frames_are_zero_copy_while_buffers_last_then_copied(sway, stack, grab_bin, tmp_path):
    # repaint every 0.1 s so that the 40 frames held are different PipeWire buffers
    info = run_grab(grab_bin, stack, tmp_path, "--hold", "40", poke_every=0.1, settle_ms=0)
    assert info["identical"], "held frames changed under their holders"
    print({k: v for k, v in info.items() if k not in ("frame", "crop")})
    assert info["buffers"] >= 2
    if info["buffers"] >= 3:
        assert info["foreign_frames"] >= 1, info
    # more distinct frames held than the producer has buffers: the rest were copied
    assert info["held_during"] <= max(info["buffers"] - 2, 0) + 1, info
    assert info["foreign_frames"] < 41, info
    assert info["copies"] > 1, info
    # every held buffer went back to PipeWire when the frames were dropped
    assert info["held_after"] <= 1, info
    if info["copies"] > 1:
        assert "copied once" in info["reason"], info


def test_no_portal_on_the_bus_is_a_clear_error(sway, grab_bin, tmp_path):
    with portal_env.PortalStack(sway, daemons=False) as bare:
        r = subprocess.run(
            [str(grab_bin), str(tmp_path / "x")], env=bare.env, capture_output=True, timeout=60
        )
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "screen-cast portal" in err and "xdg-desktop-portal" in err, err


@pytest.fixture()
def portal_process(stack, monkeypatch):
    """This process sees only the portal stack: its bus, runtime and state dirs, no
    display variables. Yields framebus."""
    framebus = pytest.importorskip("framebus", exc_type=ImportError)
    for k in ("DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "XDG_STATE_HOME", "HOME"):
        monkeypatch.setenv(k, stack.env[k])
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    return framebus


@contextlib.contextmanager
def repainting(sway, every: float = 1.0):
    """Show the picture again every `every` s: the damage xdg-desktop-portal-wlr
    needs before it sends a frame."""
    stop = threading.Event()

    def poke() -> None:
        while not stop.wait(every):
            sway.show_image(sway.output, PICTURE, wait=False)

    poker = threading.Thread(target=poke, daemon=True)
    poker.start()
    try:
        yield
    finally:
        stop.set()
        poker.join(timeout=10)


def settled_grab(g, deadline_s: float = 20) -> np.ndarray:
    """Grab until the frame shows PICTURE (the stream may still carry an older one)."""
    deadline = time.monotonic() + deadline_s
    while True:
        arr = np.asarray(g.grab())
        if np.array_equal(arr[..., [2, 1, 0]], PICTURE) or time.monotonic() > deadline:
            return arr
        time.sleep(0.1)


def test_python_grabber_backend_portal(sway, stack, portal_process):
    """framebus.Grabber(backend="portal") in this process: pixel-exact, read-only frames,
    NumPy views keep the PipeWire buffer until they go."""
    framebus = portal_process
    with repainting(sway):
        try:
            g = framebus.Grabber(backend="portal")
        except framebus.CaptureError as e:
            if "no ScreenCast portal client" in str(e):
                pytest.skip("the installed extension predates the portal backend")
            raise
        assert g.backend == "portal"
        assert g.screen_size == (W, H)
        arr = settled_grab(g)
        assert arr.shape == (H, W, 4)
        assert np.array_equal(arr[..., [2, 1, 0]], sway.grim(output=sway.output))
        assert not arr.flags.writeable
        region = np.asarray(g.grab(region={"left": 10, "top": 20, "width": 100, "height": 50}))
        assert np.array_equal(region[..., [2, 1, 0]], PICTURE[20:70, 10:110])
        # a second grabber of this process shares the session: no dialog, no waiting
        # for the screen to change, the same picture
        t0 = time.monotonic()
        g2 = framebus.Grabber(backend="portal")
        second = np.asarray(g2.grab())
        assert time.monotonic() - t0 < 2
        assert np.array_equal(second, arr)
        del arr, region, second
        g2.close()
        g.close()


def test_python_portal_source_options(sway, stack, portal_process):
    """portal_source= picks what the portal offers; window sources need the portal;
    portal_restore=False keeps no token."""
    framebus = portal_process
    token = stack.state / "framebus" / "portal-restore-token"
    with pytest.raises(ValueError, match='"tab"'):
        framebus.Grabber(backend="portal", portal_source="tab")
    with pytest.raises(ValueError, match=r'backend "x11" cannot share a window'):
        framebus.Grabber(backend="x11", portal_source="window")
    with pytest.raises(ValueError, match=r"wlr-screencopy"):
        framebus.Capture(backend="wlr-screencopy", portal_source="window")
    # xdg-desktop-portal-wlr 0.7 offers monitors only (AvailableSourceTypes = 1): a
    # window asked for under auto goes to the portal, which says what it offers
    with pytest.raises(framebus.CaptureError, match=r"offers source types 0x1 .* 0x2"):
        framebus.Grabber(portal_source="window", portal_restore=False)
    assert not token.exists()
    # "any" lets the user pick either; this portal picks the output
    with repainting(sway):
        g = framebus.Grabber(portal_source="any", portal_restore=False)
        assert g.backend == "portal"
        arr = settled_grab(g)
        assert np.array_equal(arr[..., [2, 1, 0]], sway.grim(output=sway.output))
        del arr
        g.close()
    assert not token.exists(), "portal_restore=False wrote the restore token"


def test_stack_teardown_leaves_nothing(sway):
    st = portal_env.PortalStack(sway, output=sway.output)
    assert {"org.freedesktop.portal.Desktop"} <= st.names()
    st.stop()
    assert st.alive() == []
    assert not st.dir.exists()


def test_portal_frames_carry_the_producers_damage(sway, stack, portal_process):
    """Capture(backend="portal", on_change=True): nothing while the screen is still, then
    a frame whose damage (the producer's SPA_META_VideoDamage) is a small rectangle
    covering every pixel that changed; the first frame's damage is the whole frame."""
    framebus = portal_process
    term = sway.terminal("#204060")
    try:
        with framebus.Capture(
            backend="portal", target_fps=None, on_change=True, portal_restore=False
        ) as cap:
            first = cap.next(timeout=20)
            prev = np.array(np.asarray(first)[..., [2, 1, 0]])
            assert (prev == (0x20, 0x40, 0x60)).all()
            assert [tuple(r) for r in first.damage] == [(0, 0, W, H)]
            del first
            with pytest.raises(TimeoutError):
                cap.next(timeout=0.5)
            # One cell of a pure colour, written by the client.
            term.write(b"\x1b[48;2;255;0;0m \x1b[0m")
            f = cap.next(timeout=10)
            cur = np.array(np.asarray(f)[..., [2, 1, 0]])
            assert (cur == (255, 0, 0)).all(axis=2).any()
            damage = [tuple(r) for r in f.damage]
            assert damage, "a new frame without damage"
            bad = wayland.uncovered(prev, cur, damage)
            assert len(bad) == 0, f"changed outside damage {damage}: {bad[:3]}"
            area = sum(w * h for _, _, w, h in damage)
            assert area < W * H // 4, f"damage {damage} is most of the output for one cell"
    finally:
        term.close()
        sway.procs[-1].kill()
