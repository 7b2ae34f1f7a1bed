"""The command line from pip: `python -m framebus` runs the CLI compiled into the
extension (the same code as `target/release/framebus`): version, info, grab,
`ls` against live publishers, `view` in a real browser (headless Chromium)
against a channel and against the screen under Xvfb, and Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path

import framebus
import numpy as np
import pytest
from framebus import _framebus
from media import ffmpeg_bytes_read

PIL = pytest.importorskip("PIL.Image")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt: chromium)")
# The page draws the picture at this offset (below the figures bar).
CANVAS_TOP = 24


def fb(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Run `python -m framebus ARGS` (the console script runs the same `main`)."""
    return subprocess.run(
        [sys.executable, "-m", "framebus", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,
    )


def fb_popen(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "framebus", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def stop(p: subprocess.Popen, timeout: float = 10) -> tuple[str, str]:
    """Ctrl-C, then the output; the process must end cleanly and in time."""
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"did not stop within {timeout} s of Ctrl-C: {err}") from None
    assert p.returncode == 0, err
    return out, err


# --- the entry point ---------------------------------------------------------------------


def test_version_is_the_package_version():
    r = fb("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"framebus {metadata.version('framebus')}"
    assert r.stdout.strip() == f"framebus {_framebus.__version__}"


def test_help_lists_every_subcommand_and_bad_arguments_exit_2():
    r = fb("--help")
    assert r.returncode == 0
    for sub in ("info", "grab", "record", "ls", "view"):
        assert f"\n  {sub} " in r.stdout, r.stdout
    r = fb("no-such-command")
    assert r.returncode == 2 and "no-such-command" in r.stderr
    r = fb("view", "zenoh:key")
    assert r.returncode == 1 and 'unknown kind "zenoh"' in r.stderr
    r = fb("ls", "--watch", "-1")
    assert r.returncode != 0


def test_main_is_the_console_script_target():
    from framebus import __main__

    assert callable(__main__.main)
    with pytest.raises(TypeError):
        _framebus._cli_main("framebus --version")  # a list, not a string


def test_info():
    r = fb("info")
    assert r.returncode == 0, r.stderr
    assert "page size" in r.stdout


def test_grab_writes_the_monitor(xvfb_factory, tmp_path):
    server = xvfb_factory(320, 200)
    block = np.zeros((50, 60, 4), np.uint8)
    block[:] = (0, 0, 255, 255)  # BGRA red
    _framebus._test_put_image(server.display, 10, 20, 60, 50, block.tobytes())
    out = tmp_path / "shot.png"
    r = fb("grab", "-d", server.display, "-m", "1", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    img = np.asarray(PIL.open(out).convert("RGB"))
    assert img.shape == (200, 320, 3)
    assert tuple(img[30, 20]) == (255, 0, 0)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_record_through_python_stops_on_ctrl_c_and_finishes_the_file(xvfb_factory, tmp_path):
    from media import probe

    server = xvfb_factory(320, 240)
    out = tmp_path / "rec.mkv"
    p = fb_popen(
        "record", "-d", server.display, "-m", "1", "-r", "10", "--codec", "ffv1", "-o", str(out)
    )
    frame_bytes = 320 * 240 * 4
    deadline = time.monotonic() + 30
    while ffmpeg_bytes_read(p.pid) < 5 * frame_bytes and time.monotonic() < deadline:
        assert p.poll() is None, p.communicate()[1]
        time.sleep(0.05)
    assert ffmpeg_bytes_read(p.pid) >= 5 * frame_bytes, "FFmpeg never read 5 frames"
    stdout, _ = stop(p)
    assert "320x240" in stdout and "at 10 fps" in stdout, stdout
    info = probe(out)
    assert (info["width"], info["height"]) == (320, 240)
    assert int(info["nb_read_frames"]) >= 5


# --- ls ----------------------------------------------------------------------------------


def send_some(pub: framebus.Publisher, w: int, h: int, fmt: str, n: int, period: float) -> None:
    for _ in range(n):
        pub.send(pub.acquire(w, h, fmt))
        time.sleep(period)


def test_ls_lists_live_publishers_with_their_figures():
    tag = f"{os.getpid()}-{time.monotonic_ns() % 10**6}"
    a, b = f"cli-ls-a-{tag}", f"cli-ls-b-{tag}"
    with (
        framebus.Publisher(a, mode="latest") as pa,
        framebus.Publisher(b, mode="lossless", depth=4) as pb,
    ):
        sub = framebus.Subscriber(a, timeout=5)
        pa.wait_for_subscribers(1, timeout=5)
        send_some(pa, 320, 200, "RGB", 12, 0.02)  # ~50 frames/s
        r = fb("ls", "--json")
        assert r.returncode == 0, r.stderr
        rows = {row["name"]: row for row in json.loads(r.stdout)}
        ra, rb = rows[a], rows[b]
        assert ra["pid"] == os.getpid() and rb["pid"] == os.getpid()
        assert (ra["mode"], ra["depth"], ra["subscribers"]) == ("latest", 0, 1)
        assert (ra["width"], ra["height"], ra["format"], ra["sent"]) == (320, 200, "RGB", 12)
        assert 10 < ra["fps"] < 80, ra
        assert ra["pool_bytes"] >= 320 * 200 * 3
        assert (rb["mode"], rb["depth"], rb["subscribers"]) == ("lossless", 4, 0)
        assert (rb["width"], rb["format"], rb["sent"], rb["fps"]) == (None, None, 0, 0)
        # Asking did not subscribe.
        assert pa.subscribers == 1 and pb.subscribers == 0

        r = fb("ls")
        assert r.returncode == 0, r.stderr
        header, *lines = r.stdout.splitlines()
        assert header.split() == ["NAME", "PID", "MODE", "SUBS", "SIZE", "FORMAT", "FPS", "POOL"]
        line_a = next(line.split() for line in lines if line.startswith(a + " "))
        assert line_a[:6] == [a, str(os.getpid()), "latest", "1", "320x200", "RGB"]
        line_b = next(line.split() for line in lines if line.startswith(b + " "))
        assert line_b[:6] == [b, str(os.getpid()), "lossless/4", "0", "-", "-"]
        sub.close()
    r = fb("ls", "--json")
    names = {row["name"] for row in json.loads(r.stdout)}
    assert a not in names and b not in names, "a closed channel is gone at once"


def test_ls_watch_refreshes_until_ctrl_c():
    name = f"cli-watch-{os.getpid()}"
    with framebus.Publisher(name):
        p = fb_popen("ls", "--json", "--watch", "0.1")
        arrays = []
        deadline = time.monotonic() + 20
        while len(arrays) < 3 and time.monotonic() < deadline:
            line = p.stdout.readline()
            if line:
                arrays.append(json.loads(line))
        assert len(arrays) >= 3, "ls --watch printed fewer than 3 refreshes"
        assert all(name in {row["name"] for row in a} for a in arrays)
        t = time.monotonic()
        stop(p)
        assert time.monotonic() - t < 5


# --- view in a browser -------------------------------------------------------------------


def screenshot(url: str, path: Path, size=(800, 480)) -> np.ndarray:
    """Open `url` in headless Chromium and return the screenshot as RGB."""
    profile = path.with_suffix(".profile")
    cmd = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",  # as root
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--screenshot={path}",
        f"--window-size={size[0]},{size[1]}",
        "--virtual-time-budget=2500",
        url,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert path.exists(), f"no screenshot: {r.stderr[-2000:]}"
    return np.asarray(PIL.open(path).convert("RGB")).astype(int)


def near(px, rgb, tol: int = 40) -> bool:
    return all(abs(int(a) - b) <= tol for a, b in zip(px, rgb))


def start_view(*args: str) -> tuple[subprocess.Popen, str]:
    """`framebus view ARGS`; returns the process and the URL it printed."""
    p = fb_popen("view", *args)
    url = p.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        p.kill()
        raise AssertionError(f"view printed {url!r}: {p.communicate()[1]}")
    return p, url


class Pattern:
    """A publisher sending a known test pattern at ~30 fps: red, green and blue
    bars on the top half, a white block at `x` on the bottom half."""

    W, H = 640, 360

    def __init__(self, name: str) -> None:
        self.pub = framebus.Publisher(name, mode="latest")
        self.x = 40
        self.done = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        w, h = self.W, self.H
        while not self.done.is_set():
            f = self.pub.acquire(w, h, "BGRA")
            a = np.asarray(f)
            a[:] = (40, 40, 40, 255)
            a[: h // 2, : w // 3] = (0, 0, 255, 255)  # BGRA: red
            a[: h // 2, w // 3 : 2 * w // 3] = (0, 255, 0, 255)  # green
            a[: h // 2, 2 * w // 3 :] = (255, 0, 0, 255)  # blue
            a[h // 2 + 40 : h - 40, self.x : self.x + 80] = (255, 255, 255, 255)
            del a
            self.pub.send(f)
            del f
            self.sent += 1
            time.sleep(1 / 30)

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)
        self.pub.close()


@needs_chromium
def test_view_channel_shows_the_pattern_live_in_chromium(tmp_path):
    name = f"cli-view-{os.getpid()}"
    pattern = Pattern(name)
    p = None
    try:
        p, url = start_view(f"channel:{name}")
        # The token guards every endpoint.
        base = url.split("?")[0]
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base, timeout=10)
        assert e.value.code == 403
        token = url.split("token=")[1]
        with urllib.request.urlopen(f"{base}stats?token={token}", timeout=10) as r:
            stats = json.load(r)
        assert stats["source"] == f"channel:{name}"

        shot1 = screenshot(url, tmp_path / "one.png")
        top = CANVAS_TOP
        row = top + 90  # in the bars
        assert near(shot1[row, 100], (255, 0, 0)), shot1[row, 100]
        assert near(shot1[row, 320], (0, 255, 0)), shot1[row, 320]
        assert near(shot1[row, 540], (0, 0, 255)), shot1[row, 540]
        block_row = top + 270
        assert near(shot1[block_row, 80], (255, 255, 255)), shot1[block_row, 80]
        assert near(shot1[block_row, 400], (40, 40, 40)), shot1[block_row, 400]
        assert near(shot1[top + 400 - 24, 700], (32, 32, 32)), "page background right of it"

        pattern.x = 360  # move the block
        time.sleep(0.3)
        shot2 = screenshot(url, tmp_path / "two.png")
        assert near(shot2[block_row, 400], (255, 255, 255)), shot2[block_row, 400]
        assert near(shot2[block_row, 80], (40, 40, 40)), shot2[block_row, 80]
        assert np.abs(shot1 - shot2).sum() > 0

        with urllib.request.urlopen(f"{base}stats?token={token}", timeout=10) as r:
            stats = json.load(r)
        assert (stats["width"], stats["height"], stats["format"]) == (640, 360, "BGRA")
        assert stats["served"] >= 2 and stats["received"] >= 2
        _, err = stop(p)
        p = None
        assert "frames received" in err
    finally:
        if p is not None:
            p.kill()
            p.communicate()
        pattern.close()


@needs_chromium
def test_view_screen_under_xvfb_in_chromium(xvfb_factory, tmp_path):
    server = xvfb_factory(640, 400)
    red = np.zeros((120, 200, 4), np.uint8)
    red[:] = (0, 0, 255, 255)  # BGRA red
    _framebus._test_put_image(server.display, 100, 50, 200, 120, red.tobytes())
    p, url = start_view("screen:1", "-d", server.display, "-r", "20")
    try:
        shot1 = screenshot(url, tmp_path / "one.png")
        y = CANVAS_TOP + 50 + 60
        assert near(shot1[y, 200], (255, 0, 0)), shot1[y, 200]
        assert near(shot1[y, 450], (0, 0, 0)), shot1[y, 450]

        # Move the pattern: paint over the red, draw a green block further right.
        _framebus._test_put_image(server.display, 100, 50, 200, 120, bytes(200 * 120 * 4))
        green = np.zeros((120, 200, 4), np.uint8)
        green[:] = (0, 255, 0, 255)
        _framebus._test_put_image(server.display, 350, 50, 200, 120, green.tobytes())
        time.sleep(0.3)
        shot2 = screenshot(url, tmp_path / "two.png")
        assert near(shot2[y, 450], (0, 255, 0)), shot2[y, 450]
        assert near(shot2[y, 200], (0, 0, 0)), shot2[y, 200]
        assert np.abs(shot1 - shot2).sum() > 0
        stop(p)
        p = None
    finally:
        if p is not None:
            p.kill()
            p.communicate()


def test_view_is_client_paced_and_never_slows_the_publisher():
    """A fast client gets frame after frame (numbers rising); a slow one gets the
    newest frame each time (numbers jump: it sees fewer frames, never older ones);
    the publisher keeps its rate meanwhile."""
    name = f"cli-paced-{os.getpid()}"
    pattern = Pattern(name)
    p = None
    try:
        p, url = start_view(f"channel:{name}")
        base, token = url.split("?")[0], url.split("token=")[1]

        def frame(after: int) -> tuple[int, bytes]:
            with urllib.request.urlopen(
                f"{base}frame.jpg?token={token}&after={after}", timeout=10
            ) as r:
                assert r.status == 200
                return int(r.headers["X-Frame-Seq"]), r.read()

        seqs, t = [], time.monotonic()
        sent0 = pattern.sent
        while time.monotonic() - t < 1.5:
            seq, jpeg = frame(seqs[-1] if seqs else 0)
            assert jpeg[:2] == b"\xff\xd8"
            seqs.append(seq)
        assert len(seqs) >= 10 and seqs == sorted(set(seqs)), seqs

        slow = []
        for _ in range(4):
            time.sleep(0.4)
            slow.append(frame(slow[-1] if slow else seqs[-1])[0])
        gaps = [b - a for a, b in zip([seqs[-1], *slow], slow)]
        assert min(gaps) >= 3, f"a slow client skips frames: {gaps}"
        rate = (pattern.sent - sent0) / (time.monotonic() - t)
        assert rate > 15, f"the publisher slowed down to {rate:.1f} fps"
        stop(p)
        p = None
    finally:
        if p is not None:
            p.kill()
            p.communicate()
        pattern.close()
