"""`framebus record`: screen → VideoWriter → a file that plays with the right size,
frame count and rate, and shows what was on the screen."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from framebus import _framebus
from media import decode, ffmpeg_bytes_read, probe

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="needs ffmpeg"
)

W, H = 320, 240


def cli() -> str:
    root = Path(__file__).resolve().parents[1]
    for c in (root / "target" / "release" / "framebus", root / "target" / "debug" / "framebus"):
        if c.exists():
            return str(c)
    pytest.skip("the framebus CLI is not built (cargo build -p framebus-cli)")


def first_frame_rgb(path: Path, w: int, h: int) -> np.ndarray:
    return np.frombuffer(decode(path, "rgb24", frames=1), np.uint8).reshape(h, w, 3)


@pytest.fixture
def painted(xvfb_factory):
    server = xvfb_factory(640, 480)
    block = np.zeros((H, W, 4), np.uint8)
    block[: H // 2] = (0, 0, 255, 255)  # BGRA red on top
    block[H // 2 :] = (255, 0, 0, 255)  # blue below
    _framebus._test_put_image(server.display, 100, 50, W, H, block.tobytes())
    return server


def test_record_for_a_duration_plays_with_size_count_and_rate(painted, tmp_path):
    out = tmp_path / "rec.mp4"
    r = subprocess.run(
        [
            cli(),
            "record",
            "-d",
            painted.display,
            "-c",
            f"50,100,{W},{H}",
            "-r",
            "20",
            "-t",
            "1.5",
            "-o",
            str(out),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "30 frames at 20 fps" in r.stdout, r.stdout
    info = probe(out)
    assert (info["width"], info["height"]) == (W, H)
    assert abs(int(info["nb_read_frames"]) - 30) <= 1
    assert info["r_frame_rate"] == "20/1" and info["pix_fmt"] == "yuv420p"
    rgb = first_frame_rgb(out, W, H).astype(int)
    assert np.abs(rgb[10, 10] - (255, 0, 0)).max() <= 12, rgb[10, 10]  # lossy codec
    assert np.abs(rgb[H - 10, 10] - (0, 0, 255)).max() <= 12, rgb[H - 10, 10]


def test_record_until_ctrl_c_finishes_the_file(painted, tmp_path):
    out = tmp_path / "rec.mkv"
    p = subprocess.Popen(
        [
            cli(),
            "record",
            "-d",
            painted.display,
            "-m",
            "1",
            "-r",
            "10",
            "--codec",
            "ffv1",
            "-o",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Interrupt once FFmpeg has read at least 12 frames (a condition, not a guess
    # at how long start-up takes on a loaded machine; a partial .mkv cannot be
    # probed, so count the bytes FFmpeg read from its stdin instead).
    frame_bytes = 640 * 480 * 4
    deadline = time.monotonic() + 30
    while ffmpeg_bytes_read(p.pid) < 12 * frame_bytes and time.monotonic() < deadline:
        assert p.poll() is None, p.communicate()[1]
        time.sleep(0.05)
    assert ffmpeg_bytes_read(p.pid) >= 12 * frame_bytes, "FFmpeg never got 12 frames"
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 0, stderr
    info = probe(out)
    assert (info["width"], info["height"]) == (640, 480)
    assert 12 <= int(info["nb_read_frames"]) <= 40, info
    rgb = first_frame_rgb(out, 640, 480)  # ffv1 is lossless: exact pixels
    assert tuple(rgb[60, 110]) == (255, 0, 0) and tuple(rgb[50 + H - 1, 100 + W - 1]) == (0, 0, 255)


@pytest.mark.parametrize(
    "args,match",
    [
        (["-r", "0"], "--fps 0"),
        (["-t", "-1"], "--duration -1"),
        (["-m", "7"], "7"),
        (["-c", "0,0,5000,10"], "5000"),
        (["--codec", "no-such-codec", "-t", "0.5"], "no-such-codec"),
    ],
)
def test_record_bad_arguments_fail_with_a_message(painted, tmp_path, args, match):
    r = subprocess.run(
        [cli(), "record", "-d", painted.display, "-o", str(tmp_path / "x.mp4"), "-q", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert match in r.stderr, r.stderr
