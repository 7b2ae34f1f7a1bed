"""Wayland capture under headless sway 1.7 (tests/wayland.py): pixel-exact against grim
on the whole output and on every edge, monitors as sway reports them, outputs added
and removed while a Grabber lives, the compositor killed mid-capture, slot reuse,
memory and fds over 10 000 grabs, on-change capture with damage, clear errors, and
the mss / grab / CLI entry points unchanged with only WAYLAND_DISPLAY set."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import framebus
import numpy as np
import pytest
from framebus.capture import Capture, Grabber, Region
from signals import time_limit
from wayland import Sway, pattern_rgb, require_sway, uncovered, wait_for

W, H = 640, 480
ROOT = Path(__file__).resolve().parents[1]

# Every Wayland backend sway can serve here. sway 1.7 has no ext-image-copy-capture;
# the ScreenCast portal (PipeWire) is checked against grim in tests/test_portal.py.
BACKENDS = ["wlr-screencopy"]

EDGE_REGIONS = [
    (0, 0, W, H),
    (0, 0, 1, 1),
    (W - 1, H - 1, 1, 1),
    (0, 0, W, 1),
    (0, H - 1, W, 1),
    (0, 0, 1, H),
    (W - 1, 0, 1, H),
    (W - 7, 100, 7, 13),
    (123, 45, 378, 91),
]


def rgb(frame) -> np.ndarray:
    """A BGRA frame's pixels as RGB, the order grim writes."""
    return np.asarray(frame)[..., [2, 1, 0]]


@pytest.fixture(scope="session")
def sway():
    """One headless sway for the session: HEADLESS-1 at 640x480, 60 Hz."""
    require_sway()
    s = Sway(W, H)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def screen(sway):
    """The session sway showing the test pattern (every pixel of a row/column differs)."""
    sway.show_image(sway.output, pattern_rgb(0, 0, W, H))
    return sway


@pytest.fixture
def sway_factory():
    """Private sways for tests that kill or reconfigure the compositor:
    ``sway_factory(w, h, refresh=None, nested=False)``; stopped after the test."""
    require_sway()
    started = []

    def start(width=320, height=240, refresh=None, nested=False) -> Sway:
        s = Sway(width, height, refresh=refresh, nested=nested)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


# --- the fixture ----------------------------------------------------------------


def test_fixture_stops_everything_it_started(sway_factory):
    s = sway_factory(64, 48, nested=True)
    term = s.terminal("#00ff00")
    assert (s.grim() == (0, 255, 0)).all()
    pids = s._own_pids() + s.host._own_pids()
    assert len(pids) >= 5, pids  # two sways, two swaybgs, foot (and its cat)
    assert term.proc.pid in pids
    s.stop()
    assert not s.alive and not s.dir.exists() and not s.host.dir.exists()
    gone = wait_for(
        lambda: all(not Path(f"/proc/{p}").exists() or _zombie(p) for p in pids), 5, "exit"
    )
    assert gone


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True


# --- pixels -------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_pixel_exact_against_grim_on_every_edge(screen, backend):
    whole = screen.grim()
    np.testing.assert_array_equal(whole, pattern_rgb(0, 0, W, H))  # the picture is up
    with Grabber(screen.socket, backend=backend) as g:
        assert g.backend == backend
        f = g.grab()
        assert (f.width, f.height, f.format, f.stride) == (W, H, "BGRA", W * 4)
        np.testing.assert_array_equal(rgb(f), whole)
        for left, top, w, h in EDGE_REGIONS:
            f = g.grab(Region(left, top, w, h))
            assert (f.width, f.height) == (w, h)
            assert f.readonly
            ref = screen.grim(region=(left, top, w, h))
            np.testing.assert_array_equal(rgb(f), ref, err_msg=f"region {(left, top, w, h)}")
            np.testing.assert_array_equal(rgb(f), pattern_rgb(left, top, w, h))


def test_auto_backend_on_sway_is_wlr_screencopy_with_the_reason(screen):
    with Grabber(screen.socket) as g:
        assert g.backend == "wlr-screencopy"
        assert "ext-image-copy" in (g.backend_reason or ""), g.backend_reason
    with Grabber(screen.socket, backend="wayland") as g:
        assert g.backend == "wlr-screencopy"


def test_display_by_socket_name_under_xdg_runtime_dir(screen, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(screen.dir))
    with Grabber(screen.name) as g:
        assert g.backend == "wlr-screencopy"
        np.testing.assert_array_equal(rgb(g.grab(Region(3, 4, 50, 60))), pattern_rgb(3, 4, 50, 60))


def test_frame_is_a_zero_copy_view_of_its_slot(screen):
    with Grabber(screen.socket) as g:
        f = g.grab((0, 0, 64, 64))
        a = np.asarray(f)
        assert a.ctypes.data == f.address
        assert not a.flags.writeable


def test_real_client_content_is_pixel_exact(sway_factory):
    s = sway_factory(320, 240)
    term = s.terminal("#000080")
    # Truecolour cells: a pure blue run, red glyphs on yellow, then plain text.
    term.write(b"\x1b[48;2;0;0;255m      \x1b[0m\r\n")
    term.write(b"\x1b[38;2;255;0;0;48;2;255;255;0m framebus \x1b[0m\r\n")
    term.write(b"wayland \xe2\x9c\x93 capture\r\n")
    want = wait_for(
        lambda: img if ((img := s.grim()) == (255, 255, 0)).all(axis=2).any() else None,
        10,
        "foot drew its cells",
    )
    with Grabber(s.socket) as g:
        f = g.grab()
        np.testing.assert_array_equal(rgb(f), want)
    px = rgb(f).reshape(-1, 3)
    assert (px == (0, 0, 255)).all(axis=1).sum() > 100  # the blue cells
    assert (px == (0, 0, 0x80)).all(axis=1).sum() > 0.5 * len(px)  # the window background
    assert ((px[:, 0] > 200) & (px[:, 1] < 60)).sum() > 20  # red glyph pixels


# --- monitors -----------------------------------------------------------------

# wl_output.transform values, by the names swaymsg prints. sway 1.7 names rotations
# clockwise, wl_output counter-clockwise: after `output X transform 90`, get_outputs says
# "90" and the wl_output says 270 (wayland-info: "output_transform: 270°").
TRANSFORMS = {"normal": 0, "90": 3, "180": 2, "270": 1}


def expected_monitors(s: Sway) -> tuple[dict, dict]:
    outs = [o for o in s.outputs() if o["active"]]
    rects = [
        (o["rect"]["x"], o["rect"]["y"], o["rect"]["width"], o["rect"]["height"]) for o in outs
    ]
    left = min(r[0] for r in rects)
    top = min(r[1] for r in rects)
    right = max(r[0] + r[2] for r in rects)
    bottom = max(r[1] + r[3] for r in rects)
    whole = {"left": left, "top": top, "width": right - left, "height": bottom - top}
    per = {
        o["name"]: {
            "left": o["rect"]["x"],
            "top": o["rect"]["y"],
            "width": o["rect"]["width"],
            "height": o["rect"]["height"],
            "name": o["name"],
            "scale": o["scale"],
            "transform": o["transform"],
            # wlroots names outputs of its headless and wayland backends so.
            "description": f"{'Wayland' if s.nested else 'Headless'} output "
            + o["name"].split("-")[1],
        }
        for o in outs
    }
    return whole, per


def check_monitors(mons: list[dict], s: Sway) -> None:
    whole, per = expected_monitors(s)
    assert {k: mons[0][k] for k in whole} == whole
    assert sorted(m["name"] for m in mons[1:]) == sorted(per)
    for m in mons[1:]:
        want = per[m["name"]]
        got = {k: m.get(k) for k in want}
        if isinstance(got["transform"], int):
            want = dict(want, transform=TRANSFORMS[want["transform"]])
        assert got == want, m


def test_monitors_match_swaymsg(sway_factory):
    s = sway_factory(320, 240)
    second = s.create_output(400, 300)
    third = s.create_output(200, 100)
    s.swaymsg(f"output {second} position 320 40 scale 2")
    s.swaymsg(f"output {third} position 0 240 transform 90")
    wait_for(lambda: s.output_rect(second) == (320, 40, 200, 150), 10, "scale applied")
    wait_for(lambda: s.output_rect(third) == (0, 240, 100, 200), 10, "transform applied")
    with Grabber(s.socket) as g:
        mons = wait_for(
            lambda: m if len(m := g.monitors) == 4 and m[0]["height"] == 440 else None,
            5,
            "the grabber sees the new layout",
        )
        check_monitors(mons, s)
        assert (mons[0]["width"], mons[0]["height"]) == (520, 440)
        assert {m["name"]: m["scale"] for m in mons[1:]}[second] == 2.0
        # A scaled or rotated output grabs whole in its own pixels, as `grim -o` does:
        # 400x300 for the 2x output, 100x200 upright for the turned one.
        for i, m in enumerate(mons[1:], 1):
            h, w = s.grim(output=m["name"]).shape[:2]
            s.show_image(m["name"], pattern_rgb(0, 0, w, h))
            f = g.grab(i)
            assert (f.width, f.height) == (w, h), m
            np.testing.assert_array_equal(rgb(f), s.grim(output=m["name"]), err_msg=m["name"])
            np.testing.assert_array_equal(rgb(f), pattern_rgb(0, 0, w, h), err_msg=m["name"])
        assert sorted(g.grab(i).shape[:2] for i in (2, 3)) == [(200, 100), (300, 400)]
        # Their pixels do not line up with the others' in one frame: a clear error.
        with pytest.raises(ValueError, match="scaled or rotated.*grab each monitor"):
            g.grab()


def test_fractional_scale_matches_swaymsg(sway_factory):
    s = sway_factory(320, 240)
    second = s.create_output(300, 200)
    s.swaymsg(f"output {second} scale 1.5")
    wait_for(lambda: s.output_rect(second) == (320, 0, 200, 133), 10, "scale applied")
    with Grabber(s.socket) as g:
        mons = wait_for(
            lambda: m if len(m := g.monitors) == 3 and m[0]["width"] == 520 else None, 5, "layout"
        )
        m = next(m for m in mons if m["name"] == second)
        assert (m["left"], m["top"], m["width"], m["height"]) == (320, 0, 200, 133)
        assert (m["physical_width"], m["physical_height"]) == (300, 200)
        assert g.grab(2 if mons[2]["name"] == second else 1).shape == (200, 300, 4)
        assert m["scale"] == 1.5


def test_outputs_added_while_a_grabber_lives(sway_factory):
    s = sway_factory(320, 240)
    with Grabber(s.socket) as g:
        assert [m["name"] for m in g.monitors[1:]] == ["HEADLESS-1"]
        assert g.grab().shape == (240, 320, 4)
        new = s.create_output(160, 120)
        s.set_bg(new, "#ff8000")
        mons = wait_for(lambda: m if len(m := g.monitors) == 3 else None, 5, "new output")
        check_monitors(mons, s)
        idx = 1 + [m["name"] for m in mons[1:]].index(new)
        f = g.grab(idx)
        assert (f.width, f.height) == (160, 120)
        assert (rgb(f) == (0xFF, 0x80, 0)).all()
        np.testing.assert_array_equal(rgb(f), s.grim(output=new))
        whole = g.grab()
        assert whole.shape == (240, 480, 4)
        np.testing.assert_array_equal(rgb(whole), s.grim())


def test_outputs_removed_while_a_grabber_lives(sway_factory):
    # sway 1.7 cannot remove a headless output; a nested sway's outputs are windows.
    s = sway_factory(320, 240, nested=True)
    new = s.create_output(160, 120)
    with Grabber(s.socket) as g:
        mons = wait_for(lambda: m if len(m := g.monitors) == 3 else None, 5, "2 outputs")
        check_monitors(mons, s)
        assert g.grab().shape == (240, 480, 4)
        s.remove_output(new)
        mons = wait_for(lambda: m if len(m := g.monitors) == 2 else None, 5, "removal")
        assert [m["name"] for m in mons[1:]] == [s.output]
        f = g.grab()
        assert f.shape == (240, 320, 4)
        np.testing.assert_array_equal(rgb(f), s.grim())
        with pytest.raises(ValueError, match="monitor 2 does not exist"):
            g.grab(2)


# --- the compositor goes away -------------------------------------------------


def test_compositor_killed_mid_capture(sway_factory):
    s = sway_factory(160, 120, refresh=240)
    s.show_image(s.output, pattern_rgb(0, 0, 160, 120))
    g = Grabber(s.socket)
    held = g.grab()
    before = np.array(held)
    errors: list[BaseException] = []
    grabs = 0
    started = threading.Event()

    def grab_forever() -> None:
        nonlocal grabs
        try:
            while True:
                g.grab((10, 10, 100, 100))
                grabs += 1
                started.set()
        except BaseException as e:  # noqa: BLE001 - examined below
            errors.append(e)
            started.set()

    cap = Capture(display=s.socket, target_fps=None, buffer=2)
    cap.latest(timeout=5)
    t = threading.Thread(target=grab_forever, daemon=True)
    t.start()
    assert started.wait(5) and not errors, errors
    t0 = time.monotonic()
    s.kill()
    t.join(5)
    assert not t.is_alive(), "a grab still runs 5 s after the compositor died"
    assert isinstance(errors[0], framebus.CaptureError), errors
    assert time.monotonic() - t0 < 5
    with time_limit(5), pytest.raises(framebus.CaptureError):
        for _ in range(1000):  # frames captured before the kill may still be queued
            cap.latest(timeout=5)
    with time_limit(5), pytest.raises(framebus.CaptureError):
        g.grab()
    with time_limit(5), pytest.raises(framebus.CaptureError):
        Grabber(s.socket)
    # The frame held from before is intact.
    np.testing.assert_array_equal(np.asarray(held), before)
    np.testing.assert_array_equal(rgb(held), pattern_rgb(0, 0, 160, 120))
    cap.stop()
    g.close()


# --- slots and resources ------------------------------------------------------


def test_slots_are_reused_only_after_release(screen):
    pool = framebus.FramePool()
    with Grabber(screen.socket, pool=pool) as g:
        box = (0, 0, 200, 100)
        first = g.grab(box)
        held_slot, held_addr = first.slot_id, first.address
        copy = np.array(first)
        attached = g.attached_segments
        second = g.grab(box)
        assert second.slot_id != held_slot and second.address != held_addr
        np.testing.assert_array_equal(np.asarray(first), copy)
        first.release()
        third = g.grab(box)  # the only free slot is first's
        assert (third.slot_id, third.address) == (held_slot, held_addr)
        assert g.attached_segments == attached + 1  # one wl_shm pool per live slot, no more
        np.testing.assert_array_equal(rgb(third), pattern_rgb(0, 0, 200, 100))
        del second, third
        stats = pool.stats()
        assert stats["slots_in_use"] == 0 and stats["reuses"] >= 1, stats


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_rss_and_fds_flat_over_10000_grabs(sway_factory):
    s = sway_factory(64, 48, refresh=1000)  # a 1 ms frame timer: 10 000 grabs in seconds
    with Grabber(s.socket) as g:
        for _ in range(500):
            g.grab()
        rss, fds = _rss(), _fds()
        t0 = time.monotonic()
        total = 0
        for i in range(10_000):
            f = g.grab(Region(i % 32, i % 16, 32, 32))
            total += f.nbytes
            del f
        elapsed = time.monotonic() - t0
        grown = _rss() - rss
        assert total == 10_000 * 32 * 32 * 4
        assert grown < 4 << 20, f"RSS grew by {grown} bytes over 10 000 grabs"
        assert _fds() == fds, f"{_fds() - fds} fds more after 10 000 grabs"
        assert elapsed < 120, elapsed


# --- on-change capture --------------------------------------------------------


def test_on_change_delivers_nothing_while_still_and_the_change_within_a_refresh(sway_factory):
    s = sway_factory(320, 240)  # 60 Hz
    term = s.terminal("#204060")
    with Capture(display=s.socket, target_fps=None, on_change=True) as cap:
        first = cap.next(timeout=5)
        prev = np.array(rgb(first))
        assert (prev == (0x20, 0x40, 0x60)).all()
        with pytest.raises(TimeoutError):
            cap.next(timeout=0.5)
        captured = cap.captured
        # A small change: one cell of a pure colour, written by the client.
        t0 = time.monotonic()
        term.write(b"\x1b[48;2;255;0;0m \x1b[0m")
        f = cap.next(timeout=5)
        latency = time.monotonic() - t0
        cur = np.array(rgb(f))
        assert (cur == (255, 0, 0)).all(axis=2).any()
        damage = f.damage
        assert damage, damage
        bad = uncovered(prev, cur, damage)
        assert len(bad) == 0, f"changed outside damage {damage}: {bad[:3]}"
        area = sum(w * h for _, _, w, h in damage)
        assert area < 320 * 240 // 4, f"damage {damage} is most of the output for one cell"
        # One 60 Hz refresh, foot's render delay (< 10 ms) and scheduling slack.
        assert latency < 1 / 60 + 0.1, f"the change arrived after {latency * 1000:.1f} ms"
        assert cap.captured == captured + 1
        prev = cur
        # A change by the compositor's own background client (swaybg, respawned).
        s.set_bg(s.output, "#00ff00", wait=False)
        term.close()
        s.procs[-1].kill()  # foot gone: the background shows
        deadline = time.monotonic() + 10
        while not (prev == (0, 255, 0)).all():
            f = cap.next(timeout=max(0.01, deadline - time.monotonic()))
            cur = np.array(rgb(f))
            # While swaybg respawns and foot unmaps, the compositor may damage an area
            # and repaint the same pixels there: a frame per compositor damage is the
            # contract (the still-screen checks before and after are the strict part).
            assert f.damage, "an on-change frame without damage"
            bad = uncovered(prev, cur, f.damage)
            assert len(bad) == 0, f"changed outside damage {f.damage}: {bad[:3]}"
            prev = cur
        with pytest.raises(TimeoutError):
            cap.next(timeout=0.3)


# --- errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "region",
    [
        (W - 10, 0, W + 1, 10),
        (0, H - 1, 10, H + 1),
        {"left": -1, "top": 0, "width": 5, "height": 5},
        {"left": 0, "top": 0, "width": W + 1, "height": 1},
        Region(630, 470, 11, 10),
    ],
)
def test_region_outside_the_output_names_its_bounds(screen, region):
    with Grabber(screen.socket) as g, pytest.raises(ValueError, match=r"0,0 640x480"):
        g.grab(region)


def test_unknown_backend_lists_the_valid_ones(screen):
    with pytest.raises(ValueError, match='unknown capture backend "dx"') as e:
        Grabber(screen.socket, backend="dx")
    for name in (
        "auto",
        "x11",
        "xshm",
        "xgetimage",
        "wayland",
        "ext-image-copy",
        "wlr-screencopy",
        "portal",
    ):
        assert name in str(e.value)


def test_a_backend_sway_does_not_offer_is_a_capture_error(screen):
    with pytest.raises(framebus.CaptureError, match="ext-image-copy"):
        Grabber(screen.socket, backend="ext-image-copy")


def test_a_missing_socket_is_a_capture_error_naming_it(tmp_path):
    missing = tmp_path / "wayland-9"
    with pytest.raises(framebus.CaptureError, match=str(missing)) as e:
        Grabber(str(missing))
    assert "wayland" in str(e.value).replace(str(missing), "").lower(), e.value


def test_neither_display_nor_wayland_display_names_both(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(framebus.CaptureError) as e:
        framebus.grab()
    assert "DISPLAY" in str(e.value).replace("WAYLAND_DISPLAY", "")
    assert "WAYLAND_DISPLAY" in str(e.value)
    with pytest.raises(framebus.CaptureError, match="WAYLAND_DISPLAY"):
        Grabber()


# --- the entry points, with only WAYLAND_DISPLAY set --------------------------


def run_python(s: Sway, code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=s.env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_mss_and_grab_work_unchanged_with_wayland_display_only(screen, tmp_path):
    assert "DISPLAY" not in screen.env
    code = """
import numpy as np, framebus
from framebus import mss
with mss.mss() as sct:
    mons = sct.monitors
    shot = sct.grab({"left": 10, "top": 20, "width": 300, "height": 200})
    np.save("mss.npy", np.frombuffer(shot.rgb, np.uint8).reshape(200, 300, 3))
    print(len(mons), mons[0]["width"], mons[0]["height"], shot.size.width, shot.size.height)
f = framebus.grab()
np.save("grab.npy", np.asarray(f)[..., [2, 1, 0]])
g = framebus.Grabber()
print(g.backend)
"""
    r = run_python(screen, code, tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0].split() == ["2", "640", "480", "300", "200"]
    assert lines[1] == "wlr-screencopy"
    np.testing.assert_array_equal(np.load(tmp_path / "mss.npy"), pattern_rgb(10, 20, 300, 200))
    np.testing.assert_array_equal(np.load(tmp_path / "grab.npy"), screen.grim())


def test_cli_grab_and_record_work_unchanged_on_wayland(screen, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    from media import probe

    cli = [sys.executable, "-m", "framebus"]
    r = subprocess.run(
        [*cli, "grab", "-c", "40,30,200,100", "-o", "out.png"],
        env=screen.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "out.png") as im:
        np.testing.assert_array_equal(np.asarray(im), pattern_rgb(30, 40, 200, 100))
    r = subprocess.run(
        [*cli, "record", "-c", "0,0,320,240", "-r", "10", "-t", "1", "-o", "rec.mp4", "-q"],
        env=screen.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    info = probe(tmp_path / "rec.mp4")
    assert (info["width"], info["height"]) == (320, 240)
    assert abs(int(info["nb_read_frames"]) - 10) <= 1
