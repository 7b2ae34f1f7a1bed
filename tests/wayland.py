"""Headless sway for the Wayland capture tests, like ``conftest.XvfbServer`` for X11.

``Sway(width, height)`` starts sway 1.7 with the headless wlroots backend and the
pixman renderer (no GPU, no input devices, no Xwayland, no bar), one output
``HEADLESS-1`` painted a solid colour by sway's own ``swaybg``. sway refuses to run
as root, so under root it runs as the unprivileged user ``fbwl`` (created with
``useradd -m`` when missing) in a private runtime directory (0700, owned by that
user); root may still connect to its socket. Everything it and its clients spawn is
killed at ``stop()``: the process group, then every process whose environment names
this runtime directory (swaybg, clients started with ``env``).

What sway 1.7 (wlroots 0.15) can and cannot do here, found by trying:

* ``create_output`` adds ``HEADLESS-2``, ``-3``, ... (1920x1080 until configured);
* an output cannot be removed: there is no ``output NAME unplug`` in 1.7 (``Invalid
  output subcommand: unplug.``) and ``output NAME disable`` fails ("Failed to commit
  output") because wlroots 0.15's headless backend rejects disabling an output. For
  removal, ``Sway(nested=True)`` runs the sway under test with the *wayland* backend
  inside a second headless sway: each of its outputs (``WL-1``, ``WL-2``, ...) is a
  window of the host, and closing that window destroys the output (``remove_output``);
* headless outputs take any refresh: ``output HEADLESS-1 mode 64x48@1000Hz`` gives a
  1 ms frame timer, so 10 000 screencopy grabs take seconds, not 166 s at 60 Hz;
* ``output NAME bg FILE center`` with a PNG of the output's size shows that picture
  exactly (swaybg through cairo, 1:1): ``show_image`` is a known picture on screen,
  put there by a real Wayland client.

grim is the reference for pixel exactness: ``grim(output=None, region=None)`` returns
its capture as an HxWx3 RGB uint8 array (``grim -t ppm -``).
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import os
import pwd
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

USER = "fbwl"
BG = "#123456"
TOOLS = ("sway", "swaymsg", "grim", "swaybg")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def require_sway() -> None:
    """Skip the calling test when headless sway cannot be run here."""
    missing = missing_tools()
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed (scripts/setup.sh installs sway, grim, foot)"
        )


def hex_rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def parse_ppm(data: bytes) -> np.ndarray:
    """A binary PPM (P6, maxval 255) as an HxWx3 uint8 array."""
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    pos += 1  # the single whitespace byte after maxval
    magic, w, h, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    if magic != b"P6" or maxval != 255:
        raise ValueError(f"not an 8-bit P6 PPM: {magic!r}, maxval {maxval}")
    body = data[pos : pos + w * h * 3]
    if len(body) != w * h * 3:
        raise ValueError(f"PPM {w}x{h} has {len(body)} bytes of pixels, wants {w * h * 3}")
    return np.frombuffer(body, np.uint8).reshape(h, w, 3).copy()


def write_png(path: Path, rgb: np.ndarray) -> None:
    """An 8-bit RGB PNG, no dependency (swaybg reads it through cairo)."""
    h, w = rgb.shape[:2]
    raw = b"".join(b"\x00" + np.ascontiguousarray(rgb[y]).tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 1))
    path.write_bytes(png + chunk(b"IEND", b""))


def pattern_rgb(left: int, top: int, width: int, height: int) -> np.ndarray:
    """R = x ^ 3y, G = y, B = x (mod 256), in screen coordinates: every pixel of a row
    or column differs, so a shifted or mis-strided copy cannot match (as test_capture)."""
    y, x = np.mgrid[top : top + height, left : left + width]
    out = np.empty((height, width, 3), np.uint8)
    out[..., 0] = (x ^ (3 * y)) & 0xFF
    out[..., 1] = y & 0xFF
    out[..., 2] = x & 0xFF
    return out


def uncovered(prev: np.ndarray, cur: np.ndarray, damage) -> np.ndarray:
    """Pixels that changed but lie in no damage rectangle."""
    changed = (prev != cur).any(axis=2)
    for left, top, width, height in damage:
        changed[top : top + height, left : left + width] = False
    return np.argwhere(changed)


def wait_for(cond, timeout: float, what: str, interval: float = 0.005):
    """Poll ``cond()`` until it returns something truthy (or an array); fail naming
    ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if isinstance(value, np.ndarray) or value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-m", USER], check=True, capture_output=True)
        return pwd.getpwnam(USER)


def _group(pgid: int) -> list[int]:
    """The processes of process group ``pgid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
            pids.append(int(entry))
    return pids


class Terminal:
    """A foot window showing whatever is written to it (a FIFO read by ``cat``):
    escape sequences set colours, ``write(b"\\x1b]11;#rrggbb\\x1b\\\\")`` repaints its
    whole background, padding included."""

    def __init__(self, proc: subprocess.Popen, fifo: Path) -> None:
        self.proc, self.fifo = proc, fifo

        def reader_open() -> int | None:  # ENXIO until foot's cat opens the FIFO
            if proc.poll() is not None:
                raise RuntimeError(f"foot exited ({proc.returncode})")
            try:
                return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                return None

        fd = wait_for(reader_open, 20, "foot reading its FIFO")
        os.set_blocking(fd, True)
        self._w = os.fdopen(fd, "wb", buffering=0)

    def write(self, data: bytes) -> None:
        self._w.write(data)

    def set_background(self, color: str) -> None:
        self.write(b"\x1b]11;" + color.encode() + b"\x1b\\")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._w.close()


class Sway:
    """A headless sway 1.7; see the module docstring."""

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        refresh: int | None = None,
        bg: str = BG,
        nested: bool = False,
    ) -> None:
        require_sway()
        self.width, self.height, self.bg = width, height, bg
        self.nested = nested
        self.host: Sway | None = None
        self.procs: list[subprocess.Popen] = []
        self.terminals: list[Terminal] = []
        self.proc: subprocess.Popen | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="framebus-sway-"))
        try:
            self._start(refresh)
        except BaseException:
            self.stop()
            raise

    # --- start / stop -------------------------------------------------------

    def _start(self, refresh: int | None) -> None:
        root = os.geteuid() == 0
        if root:
            user = _ensure_user()
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            home = user.pw_dir
        else:
            home = os.environ.get("HOME", str(self.dir))
        os.chmod(self.dir, 0o700)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "XDG_RUNTIME_DIR": str(self.dir),
            "WLR_LIBINPUT_NO_DEVICES": "1",
            "WLR_RENDERER": "pixman",
        }
        if self.nested:
            # The host: a headless sway whose windows are this sway's outputs.
            self.host = Sway(self.width + 64, self.height + 64, refresh=refresh)
            self.host.swaymsg("floating_minimum_size 1 x 1")  # the default is 75 x 50
            self.host.swaymsg('for_window [app_id="wlroots"] floating enable')
            env["WAYLAND_DISPLAY"] = self.host.socket
            env["WLR_BACKENDS"] = "wayland"
            first = "WL-1"
        else:
            env["WLR_BACKENDS"] = "headless"
            first = "HEADLESS-1"
        self.output = first
        mode = f"{self.width}x{self.height}" + (f"@{refresh}Hz" if refresh else "")
        config = self.dir / "config"
        config.write_text(
            "xwayland disable\n"
            "default_border none\n"
            "default_floating_border none\n"
            "focus_follows_mouse no\n"
            "font pango:DejaVu Sans Mono 10\n"
            f"output * bg {self.bg} solid_color\n"
            f"output {first} mode {mode} position 0 0 bg {self.bg} solid_color\n"
        )
        if root:
            os.chown(config, user.pw_uid, user.pw_gid)
            cmd = ["runuser", "-u", USER, "--", "env", "-i"]
        else:
            cmd = ["env", "-i"]
        cmd += [f"{k}={v}" for k, v in env.items()] + ["sway", "-c", str(config)]
        self.log = open(self.dir / "sway.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sway exited ({self.proc.returncode}): {self.log_tail()}")
            socks = [p for p in self.dir.iterdir() if p.name.startswith("sway-ipc.")]
            ways = [
                p for p in self.dir.iterdir() if p.name.startswith("wayland-") and p.is_socket()
            ]
            if not socks or not ways:
                return False
            self.ipc, self.socket = str(socks[0]), str(ways[0])
            return True

        wait_for(ready, 20, "sway did not create its sockets")
        self.name = Path(self.socket).name
        wait_for(lambda: self._output_is(first, self.width, self.height), 20, f"{first} up")
        if self.nested:
            host = self.host
            wait_for(lambda: host.window(f"wlroots - {first}"), 10, f"the host window of {first}")
        self.wait_color(self.bg, output=first)

    def _output_is(self, name: str, w: int, h: int) -> bool:
        try:
            outs = {o["name"]: o for o in self.outputs()}
        except RuntimeError:
            return False
        o = outs.get(name)
        return bool(o and o["active"] and (o["rect"]["width"], o["rect"]["height"]) == (w, h))

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.dir / "sway.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the compositor (and only it): its clients see the socket close."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def _own_pids(self) -> list[int]:
        """Processes whose environment names this runtime directory."""
        needle = b"XDG_RUNTIME_DIR=" + str(self.dir).encode() + b"\x00"
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read() + b"\x00":
                        pids.append(int(entry))
            except OSError:
                continue
        return pids

    def stop(self) -> None:
        for t in self.terminals:
            t.close()
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        if self.proc is not None and self.proc.poll() is None:
            # SIGTERM to sway and its children, not to runuser: runuser, signalled,
            # passes it on and then sleeps 2 s before its SIGKILL; left alone, it
            # exits as soon as sway does.
            for pid in _group(self.proc.pid):
                if pid != self.proc.pid:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for pid in self._own_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        if hasattr(self, "log"):
            self.log.close()
        if self.host is not None:
            self.host.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):  # noqa: ANN204
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- clients ------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """The environment for a Wayland client of this sway (no DISPLAY)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SWAYSOCK", "XDG_RUNTIME_DIR")
        }
        env.update(WAYLAND_DISPLAY=self.name, XDG_RUNTIME_DIR=str(self.dir), SWAYSOCK=self.ipc)
        return env

    def run(self, *cmd: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, timeout=timeout, **kw)

    def swaymsg(self, *args: str, json: bool = True):
        """``swaymsg`` on this sway's IPC socket; with ``json``, the parsed reply (and a
        RuntimeError when a command did not succeed)."""
        r = self.run("swaymsg", "-s", self.ipc, "-r", *args, timeout=20)
        out = r.stdout.decode(errors="replace")
        if not json:
            if r.returncode != 0:
                raise RuntimeError(f"swaymsg {' '.join(args)}: {out} {r.stderr.decode()}")
            return out
        try:
            reply = jsonlib.loads(out)
        except ValueError:
            raise RuntimeError(
                f"swaymsg {' '.join(args)} ({r.returncode}): {out!r} {r.stderr.decode()!r}"
            ) from None
        if isinstance(reply, list) and reply and isinstance(reply[0], dict):
            failed = [x for x in reply if "success" in x and not x["success"]]
            if failed:
                raise RuntimeError(f"swaymsg {' '.join(args)}: {failed}")
        return reply

    def outputs(self) -> list[dict]:
        return self.swaymsg("-t", "get_outputs")

    def output_rect(self, name: str) -> tuple[int, int, int, int]:
        r = next(o for o in self.outputs() if o["name"] == name)["rect"]
        return r["x"], r["y"], r["width"], r["height"]

    def window(self, title: str) -> dict | None:
        def walk(node):
            if node.get("name") == title and node.get("pid"):
                return node
            for child in node.get("nodes", []) + node.get("floating_nodes", []):
                found = walk(child)
                if found:
                    return found
            return None

        return walk(self.swaymsg("-t", "get_tree"))

    def create_output(self, width: int | None = None, height: int | None = None) -> str:
        """Add an output (``swaymsg create_output``), painted ``bg``; its name."""
        before = {o["name"] for o in self.outputs()}
        self.swaymsg("create_output")
        new = wait_for(
            lambda: sorted({o["name"] for o in self.outputs()} - before), 10, "a new output"
        )[0]
        if width and height:
            self.swaymsg(f"output {new} mode {width}x{height}")
            wait_for(lambda: self._output_is(new, width, height), 10, f"{new} {width}x{height}")
        if self.nested:
            wait_for(lambda: self.host.window(f"wlroots - {new}"), 10, f"host window of {new}")
        self.wait_color(self.bg, output=new)
        return new

    def remove_output(self, name: str) -> None:
        """Destroy an output. Only ``Sway(nested=True)`` can: its host closes the
        output's window. sway 1.7's headless outputs can be neither unplugged nor
        disabled (see the module docstring)."""
        if not self.nested:
            raise NotImplementedError(
                "sway 1.7 cannot remove a headless output (no 'output NAME unplug'; "
                "wlroots 0.15 headless rejects 'disable'): use Sway(nested=True)"
            )
        self.host.swaymsg(f'[title="^wlroots - {name}$"] kill')
        wait_for(lambda: name not in {o["name"] for o in self.outputs()}, 10, f"{name} removed")

    def set_bg(self, output: str, color: str, wait: bool = True) -> None:
        """Paint ``output`` with ``color`` (sway respawns swaybg); with ``wait``, return
        once grim sees it."""
        self.swaymsg(f"output {output} bg {color} solid_color")
        if wait:
            self.wait_color(color, output=output)

    def show_image(self, output: str, rgb: np.ndarray, wait: bool = True) -> None:
        """Show an RGB picture of the output's size on ``output`` (through swaybg)."""
        path = self.dir / f"image-{output}-{time.monotonic_ns()}.png"
        write_png(path, rgb)
        os.chmod(path, 0o644)
        self.swaymsg(f"output {output} bg {path} center")
        if wait:
            wait_for(
                lambda: np.array_equal(self.grim(output=output), rgb),
                10,
                f"the picture on {output}",
                interval=0.02,
            )

    def wait_color(self, color: str, output: str | None = None, timeout: float = 10) -> None:
        """Until grim sees ``output`` entirely ``color``."""
        want = np.array(hex_rgb(color), np.uint8)

        def painted() -> bool:
            try:
                img = self.grim(output=output)
            except RuntimeError:
                return False
            return bool((img == want).all())

        wait_for(painted, timeout, f"{output or 'the screen'} painted {color}", interval=0.02)

    def grim(
        self, output: str | None = None, region: tuple[int, int, int, int] | None = None
    ) -> np.ndarray:
        """grim's capture (the reference) as HxWx3 RGB; ``region`` = (left, top, w, h)
        in layout coordinates."""
        cmd = ["grim", "-t", "ppm"]
        if output is not None:
            cmd += ["-o", output]
        if region is not None:
            left, top, w, h = region
            cmd += ["-g", f"{left},{top} {w}x{h}"]
        r = self.run(*cmd, "-")
        if r.returncode != 0:
            raise RuntimeError(f"grim failed ({r.returncode}): {r.stderr.decode()[-500:]}")
        return parse_ppm(r.stdout)

    def run_client(self, *argv: str, app_id: str | None = None, **kw) -> subprocess.Popen:
        """Start a Wayland client (killed at stop()); with ``app_id``, return once its
        window is mapped."""
        p = subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            **kw,
        )
        self.procs.append(p)
        if app_id is not None:

            def mapped() -> bool:
                if p.poll() is not None:
                    raise RuntimeError(f"{argv[0]} exited ({p.returncode})")
                return self.app_window(app_id) is not None

            wait_for(mapped, 20, f"{argv[0]} window {app_id}")
        return p

    def app_window(self, app_id: str) -> dict | None:
        def walk(node):
            if node.get("app_id") == app_id and node.get("visible"):
                return node
            for child in node.get("nodes", []) + node.get("floating_nodes", []):
                found = walk(child)
                if found:
                    return found
            return None

        return walk(self.swaymsg("-t", "get_tree"))

    def terminal(self, color: str = "#202020") -> Terminal:
        """A fullscreen foot (no padding, no cursor) painted ``color``, showing what
        ``Terminal.write`` sends it; returns once grim sees ``color`` everywhere."""
        if shutil.which("foot") is None:
            pytest.skip("foot is not installed (scripts/setup.sh installs it)")
        fifo = self.dir / f"foot-{len(self.terminals)}.fifo"
        os.mkfifo(fifo, 0o600)
        app_id = f"framebus-foot-{len(self.terminals)}"
        self.run_client(
            "foot",
            "--app-id",
            app_id,
            "--fullscreen",
            "-o",
            "pad=0x0",
            "-o",
            f"colors.background={color.lstrip('#')}",
            "-o",
            "colors.foreground=ffffff",
            "-o",
            "font=DejaVu Sans Mono:size=12",
            "cat",
            str(fifo),
        )
        t = Terminal(self.procs[-1], fifo)
        self.terminals.append(t)
        t.write(b"\x1b[?25l")  # no cursor
        wait_for(lambda: self.app_window(app_id), 20, f"foot window {app_id}")
        self.wait_color(color, output=self.output)
        return t
