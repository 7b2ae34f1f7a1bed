"""ext-image-copy-capture through the Python API, against framebus-wl-testcompositor.

Debian 12's sway (wlroots 0.15) does not offer ext-image-copy-capture-v1, so these tests
run the workspace's headless test compositor (crates/framebus-wl-testcompositor, built by
`cargo test --workspace`): the same `Grabber`, `grab`, `Capture(on_change=True)` and
`framebus.mss` calls as on sway, picking the ext backend on their own. Its pixels follow a
documented formula (`pattern_rgba`), so every frame is checked pixel for pixel.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import framebus
import numpy as np
import pytest
from framebus import Capture, Grabber

REPO = Path(__file__).resolve().parents[1]


def compositor_bin() -> Path | None:
    env = os.environ.get("FRAMEBUS_WL_TESTCOMPOSITOR")
    if env:
        return Path(env)
    for profile in ("debug", "release"):
        p = REPO / "target" / profile / "framebus-wl-testcompositor"
        if p.exists():
            return p
    return None


def pattern(width: int, height: int, seed: int, left: int = 0, top: int = 0) -> np.ndarray:
    """RGB of the test compositor's `pattern NAME SEED` (state::pattern_rgba)."""
    x = np.arange(left, left + width, dtype=np.uint32)[None, :]
    y = np.arange(top, top + height, dtype=np.uint32)[:, None]
    with np.errstate(over="ignore"):
        h = (
            (x * np.uint32(73856093))
            ^ (y * np.uint32(19349663))
            ^ np.uint32(seed * 83492791 & 0xFFFFFFFF)
        )
    return np.stack([h & 0xFF, (h >> 8) & 0xFF, (h >> 16) & 0xFF], axis=-1).astype(np.uint8)


def rgb(frame) -> np.ndarray:
    return np.asarray(frame)[..., [2, 1, 0]]


class Compositor:
    def __init__(self, tmp: Path, *outputs: str, fmt: str | None = None):
        binary = compositor_bin()
        if binary is None:
            pytest.skip(
                "framebus-wl-testcompositor is not built (cargo build -p framebus-wl-testcompositor)"
            )
        self.socket = str(tmp / "wl-ext")
        args = [str(binary), "--socket", self.socket, "--no-default-output"]
        for o in outputs:
            args += ["--output", o]
        if fmt:
            args += ["--format", fmt]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        assert self.proc.stdout.readline().strip() == "READY"

    def cmd(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer.startswith("OK"), f"{line!r} -> {answer!r}"
        return answer

    def stats(self) -> dict[str, int]:
        return dict(kv.split("=") for kv in self.cmd("stats").split()[1:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def comp(tmp_path):
    c = Compositor(tmp_path, "OUT-1 320x200 0 0")
    c.cmd("pattern OUT-1 7")
    yield c
    c.close()


def test_auto_picks_ext_image_copy_and_frames_are_pixel_exact(comp):
    with Grabber(comp.socket) as g:
        assert g.backend == "ext-image-copy"
        assert g.backend_reason is None
        mons = g.monitors
        assert [(m["name"], m["width"], m["height"]) for m in mons] == [
            ("all", 320, 200),
            ("OUT-1", 320, 200),
        ]
        f = g.grab()
        assert f.shape == (200, 320, 4)
        np.testing.assert_array_equal(rgb(f), pattern(320, 200, 7))
        r = g.grab(framebus.Region(300, 190, 20, 10))  # the bottom-right corner
        np.testing.assert_array_equal(rgb(r), pattern(20, 10, 7, 300, 190))
        with pytest.raises(ValueError, match="320x200"):
            g.grab(framebus.Region(300, 190, 21, 10))
    # The one-shot API and the explicit backend name reach the same compositor.
    np.testing.assert_array_equal(rgb(framebus.grab(display=comp.socket)), pattern(320, 200, 7))
    # grab()'s kept connection holds the compositor's buffers (default-pool
    # slots) until closed; closing gives them back.
    del f, r
    assert framebus.default_pool().stats()["slots_in_use"] >= 1
    framebus.close_shared_grab()
    assert framebus.default_pool().stats()["slots_in_use"] == 0
    with Grabber(comp.socket, backend="ext-image-copy") as g:
        assert g.backend == "ext-image-copy"
    with pytest.raises(framebus.CaptureError, match="zwlr_screencopy_manager_v1"):
        Grabber(comp.socket, backend="wlr-screencopy")


def test_rgba_formats_are_converted_to_bgra(tmp_path):
    c = Compositor(tmp_path, "OUT-1 64x48 0 0", fmt="XBGR8888")
    try:
        c.cmd("pattern OUT-1 3")
        with Grabber(c.socket) as g:
            np.testing.assert_array_equal(rgb(g.grab()), pattern(64, 48, 3))
    finally:
        c.close()


def test_on_change_capture_uses_the_compositors_damage(comp):
    with Capture(display=comp.socket, target_fps=None, on_change=True) as cap:
        assert cap.backend == "ext-image-copy"
        first = cap.next(timeout=5)
        np.testing.assert_array_equal(rgb(first), pattern(320, 200, 7))
        with pytest.raises(TimeoutError):
            cap.next(timeout=0.3)
        comp.cmd("fill OUT-1 10 20 30 40 ff0000ff")
        t0 = time.monotonic()
        f = cap.next(timeout=5)
        assert time.monotonic() - t0 < 1.0
        want = pattern(320, 200, 7)
        want[20:60, 10:40] = (255, 0, 0)
        np.testing.assert_array_equal(rgb(f), want)
        assert f.damage == [(10, 20, 30, 40)]


def test_a_socket_that_never_answers_is_an_error_and_ctrl_c_interrupts_the_open(tmp_path):
    import socket

    from signals import alarm, time_limit

    path = str(tmp_path / "silent")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)  # connections queue up; nobody ever answers
    try:
        t0 = time.monotonic()
        with time_limit(20), pytest.raises(framebus.CaptureError, match="did not answer"):
            Grabber(path)
        assert time.monotonic() - t0 < 10

        def interrupt():
            raise KeyboardInterrupt

        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt), alarm(interrupt, 0.3):
            Capture(display=path)
        assert time.monotonic() - t0 < 2, "Ctrl-C waited for the open to give up"
    finally:
        srv.close()
