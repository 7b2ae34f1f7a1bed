"""The ScreenCast portal stack for the portal tests, beside a headless sway.

``PortalStack(sway)`` starts, in sway's private runtime directory, everything a
program needs to capture through ``org.freedesktop.portal.ScreenCast``:

    sway (tests/wayland.py, user fbwl) ◀── wl_dmabuf_shim.py ◀── xdg-desktop-portal-wlr
    dbus-daemon (private session bus, no service activation)
      ├─ pipewire, wireplumber           (the PipeWire graph and its session manager)
      ├─ xdg-permission-store            (keeps persist_mode=2 grants: restore tokens)
      ├─ xdg-desktop-portal-wlr -c CONF  ([screencast] chooser_type=none,
      │                                   output_name=HEADLESS-1: no dialog)
      └─ xdg-desktop-portal              (the frontend programs talk to)

All of them run as root (the test's user; root may use the fbwl-owned runtime
directory and connect to sway's socket), with ``XDG_CURRENT_DESKTOP=sway`` (so the
frontend picks ``wlr.portal``), ``WAYLAND_DISPLAY`` (the shim's socket),
``XDG_RUNTIME_DIR`` (sway's), ``DBUS_SESSION_BUS_ADDRESS`` (the private bus) and a
private ``HOME`` / ``XDG_STATE_HOME`` (so the permission store and framebus's restore
token start empty and never touch the real home). The bus has a config of its own
with an empty service directory: nothing is D-Bus-activated behind our back (the
document portal would mount a FUSE file system), every daemon is one we started.

Why the shim: xdg-desktop-portal-wlr 0.7 insists on a DMA-BUF format from
wlr-screencopy, which GPU-less sway cannot give (see wl_dmabuf_shim.py).

Each daemon gets its own process group and an environment marker
(``FRAMEBUS_PORTAL_STACK=<dir>``); ``stop()`` SIGTERMs then SIGKILLs every group,
then kills any process that still carries the marker (forks, helpers).
``env`` is the environment for a client of the portal (the test's program).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PORTAL = "/usr/libexec/xdg-desktop-portal"
PORTAL_WLR = "/usr/libexec/xdg-desktop-portal-wlr"
PERMISSION_STORE = "/usr/libexec/xdg-permission-store"
TOOLS = ("dbus-daemon", "dbus-send", "pipewire", "wireplumber")


def missing() -> list[str]:
    """What is not installed for the portal stack (empty when it can run)."""
    out = [t for t in TOOLS if shutil.which(t) is None]
    out += [p for p in (PORTAL, PORTAL_WLR, PERMISSION_STORE) if not os.access(p, os.X_OK)]
    return out


BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={bus}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{services}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class PortalStack:
    """The portal daemons for one ``tests/wayland.Sway``; see the module docstring."""

    def __init__(
        self, sway, output: str = "HEADLESS-1", timeout: float = 20, daemons: bool = True
    ) -> None:
        """``daemons=False`` starts the private bus only (a session without a portal)."""
        self.sway = sway
        self.run_dir = Path(sway.dir)
        self.dir = Path(tempfile.mkdtemp(prefix="framebus-portal-"))
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.logs: list = []
        self.bus = self.dir / "bus"
        self.home = self.dir / "home"
        self.state = self.dir / "state"
        for d in (self.home, self.state, self.dir / "dbus-services"):
            d.mkdir()
        try:
            self._start(output, timeout, daemons)
        except BaseException:
            self.stop()
            raise

    @property
    def env(self) -> dict[str, str]:
        """The environment of a portal client (no DISPLAY, no WAYLAND_DISPLAY needed)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")
        }
        env.update(
            XDG_RUNTIME_DIR=str(self.run_dir),
            DBUS_SESSION_BUS_ADDRESS=f"unix:path={self.bus}",
            HOME=str(self.home),
            XDG_STATE_HOME=str(self.state),
            XDG_CURRENT_DESKTOP="sway",
        )
        return env

    def _daemon_env(self) -> dict[str, str]:
        env = self.env
        env.update(
            WAYLAND_DISPLAY=str(self.run_dir / "wayland-portal-shim"),
            FRAMEBUS_PORTAL_STACK=str(self.dir),
            PIPEWIRE_RUNTIME_DIR=str(self.run_dir),
        )
        return env

    def _spawn(self, name: str, *argv: str) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.logs.append(log)
        p = subprocess.Popen(
            argv,
            env=self._daemon_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if name == "shim" else log,
            stderr=log,
            start_new_session=True,
            cwd=self.dir,
        )
        self.procs.append((name, p))
        return p

    def log(self, name: str, n: int = 1500) -> str:
        try:
            return (self.dir / f"{name}.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _wait(self, cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            for name, p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}): {self.log(name)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout} s")
            time.sleep(0.02)

    def names(self) -> set[str]:
        """Names owned on the private bus."""
        r = subprocess.run(
            ["dbus-send", f"--bus=unix:path={self.bus}", "--print-reply", "--type=method_call"]
            + ["--dest=org.freedesktop.DBus", "/org/freedesktop/DBus"]
            + ["org.freedesktop.DBus.ListNames"],
            capture_output=True,
            timeout=10,
        )
        return {
            line.split('"')[1]
            for line in r.stdout.decode().splitlines()
            if line.strip().startswith('string "')
        }

    def _start(self, output: str, timeout: float, daemons: bool) -> None:
        conf = self.dir / "bus.conf"
        conf.write_text(BUS_CONFIG.format(bus=self.bus, services=self.dir / "dbus-services"))
        self._spawn("dbus", "dbus-daemon", "--nofork", "--nopidfile", f"--config-file={conf}")
        self._wait(self.bus.exists, timeout, "the private D-Bus session bus")
        if not daemons:
            return

        shim = self._spawn(
            "shim",
            sys.executable,
            str(HERE / "wl_dmabuf_shim.py"),
            self.sway.socket,
            str(self.run_dir / "wayland-portal-shim"),
        )
        line = shim.stdout.readline() if shim.stdout else b""
        if line.strip() != b"READY":
            raise RuntimeError(f"wl_dmabuf_shim did not start: {line!r} {self.log('shim')}")

        self._spawn("pipewire", "pipewire")
        self._wait((self.run_dir / "pipewire-0").exists, timeout, "pipewire's socket")
        self._spawn("wireplumber", "wireplumber")
        self._spawn("permission-store", PERMISSION_STORE, "--replace")
        xdpw_conf = self.dir / "xdpw.conf"
        xdpw_conf.write_text(f"[screencast]\nchooser_type=none\noutput_name={output}\n")
        self._spawn("xdpw", PORTAL_WLR, "-l", "INFO", "-c", str(xdpw_conf))
        self._wait(
            lambda: (
                {
                    "org.freedesktop.impl.portal.desktop.wlr",
                    "org.freedesktop.impl.portal.PermissionStore",
                }
                <= self.names()
            ),
            timeout,
            "xdg-desktop-portal-wlr and the permission store on the bus",
        )
        self._spawn("xdp", PORTAL, "--replace", "--verbose")
        self._wait(
            lambda: "org.freedesktop.portal.Desktop" in self.names(),
            timeout,
            "xdg-desktop-portal on the bus",
        )
        # WirePlumber must be linking nodes before a stream can start
        self._wait(
            lambda: b"wireplumber" in self._pw_clients().lower(),
            timeout,
            "wireplumber connected to pipewire",
        )

    def _pw_clients(self) -> bytes:
        with contextlib.suppress(Exception):
            r = subprocess.run(
                ["pw-cli", "ls", "Client"],
                env=self._daemon_env(),
                capture_output=True,
                timeout=5,
            )
            return r.stdout
        return b"wireplumber"  # no pw-cli: do not wait for what we cannot see

    def _marked_pids(self) -> list[int]:
        mark = f"FRAMEBUS_PORTAL_STACK={self.dir}".encode()
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                if mark in (d / "environ").read_bytes().split(b"\0"):
                    pids.append(int(d.name))
            except OSError:
                continue
        return pids

    def stop(self) -> None:
        for _, p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for _, p in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
            if p.stdout:
                p.stdout.close()
        for pid in self._marked_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for log in self.logs:
            log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def alive(self) -> list[str]:
        """Daemons of this stack still running (empty after ``stop()``)."""
        return [name for name, p in self.procs if p.poll() is None] + [
            str(pid) for pid in self._marked_pids()
        ]

    def __enter__(self):  # noqa: ANN204
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
