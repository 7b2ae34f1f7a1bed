"""Shared pytest fixtures: an Xvfb X server for the tests that need a display.

``start_xvfb(width, height, tcp=False)`` starts ``Xvfb -displayfd`` (the server
picks a free display number itself, so parallel test runs never collide) with
``-noreset`` (otherwise it wipes the screen when its last client leaves) and,
with ``tcp=True``, ``-listen tcp`` so ``server.tcp_display`` (127.0.0.1:N)
reaches it over TCP, where MIT-SHM cannot work. The session-scoped ``xvfb``
fixture is one 1920x1080x24 server with TCP enabled; tests that change the
screen (RandR monitors, resizes) start their own with ``xvfb_factory``.
Tests are skipped when Xvfb is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest


class XvfbServer:
    def __init__(self, width: int, height: int, tcp: bool = False, extra: tuple = ()) -> None:
        self.width, self.height, self.tcp = width, height, tcp
        read_fd, write_fd = os.pipe()
        args = [
            "Xvfb",
            "-displayfd",
            str(write_fd),
            "-screen",
            "0",
            f"{width}x{height}x24",
            "-noreset",
        ]
        if tcp:
            args += ["-listen", "tcp"]
        args += list(extra)
        self.proc = subprocess.Popen(
            args, pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        os.close(write_fd)
        number = b""
        deadline = time.monotonic() + 20
        with os.fdopen(read_fd, "rb") as r:
            while not number.endswith(b"\n") and time.monotonic() < deadline:
                chunk = r.read(1)
                if not chunk:
                    break
                number += chunk
        if not number.strip():
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"Xvfb did not start: {err[-500:]}")
        self.number = int(number)
        self.display = f":{self.number}"
        self.tcp_display = f"127.0.0.1:{self.number}"

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, DISPLAY=self.display)
        return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _require_xvfb() -> None:
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")


@pytest.fixture(scope="session")
def xvfb():
    """One 1920x1080x24 Xvfb for the session (also listening on TCP)."""
    _require_xvfb()
    server = XvfbServer(1920, 1080, tcp=True)
    yield server
    server.stop()


@pytest.fixture
def xvfb_factory():
    """Start private Xvfb servers: ``xvfb_factory(w, h, tcp=False, extra=())`` (``extra``:
    more Xvfb arguments, e.g. ``("-extension", "MIT-SHM")``); stopped after the test."""
    _require_xvfb()
    servers = []

    def start(
        width: int = 640, height: int = 480, tcp: bool = False, extra: tuple = ()
    ) -> XvfbServer:
        s = XvfbServer(width, height, tcp, extra)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()
