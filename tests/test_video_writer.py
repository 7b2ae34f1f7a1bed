"""framebus.VideoWriter: real encodes through FFmpeg, checked by decoding them back."""

from __future__ import annotations

import shutil
import subprocess
import sys

import framebus
import numpy as np
import pytest
from framebus._framebus import FFmpegError, VideoWriter
from media import decode, probe

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


def frames(n, h, w, c, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, c), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("splice", [True, False])
def test_ffv1_round_trip_is_exact_for_arrays_and_frames(tmp_path, splice):
    path = tmp_path / "out.mkv"
    w, h = 96, 64
    arrays = frames(10, h, w, 4)
    pool = framebus.FramePool()
    expected = []
    with VideoWriter(path, w, h, 30, format="BGRA", codec="ffv1", splice=splice) as vw:
        assert vw.command[vw.command.index("-pix_fmt") + 1] == "bgra"
        for i, a in enumerate(arrays):
            if i % 2:
                f = pool.acquire(w, h, "BGRA")
                np.asarray(f)[:] = a
                vw.write(f)
                f.release()  # the queued job keeps its own lease
            else:
                vw.write(a)
            expected.append(a.tobytes())
        # a cropped view (rows with gaps) is written as tight rows
        big = frames(1, h, w + 10, 4, seed=9)[0]
        vw.write(big[:, 5 : 5 + w])
        expected.append(np.ascontiguousarray(big[:, 5 : 5 + w]).tobytes())
        assert vw.frames_written == 11
    assert vw.closed
    assert decode(path, "bgra") == b"".join(expected)
    assert pool.stats()["slots_in_use"] == 0


def test_libx264rgb_lossless_rgb24(tmp_path):
    path = tmp_path / "out.mkv"
    arrays = frames(5, 48, 64, 3, seed=3)
    with VideoWriter(
        path,
        64,
        48,
        25,
        format="RGB",
        codec="libx264rgb",
        preset="ultrafast",
        extra_args=["-qp", "0"],
    ) as vw:
        for a in arrays:
            vw.write(a)
    assert decode(path, "rgb24") == b"".join(a.tobytes() for a in arrays)


def test_default_libx264_mp4_plays_with_right_size_count_and_fps(tmp_path):
    path = tmp_path / "out.mp4"
    with VideoWriter(path, 320, 240, 24, preset="ultrafast", crf=30) as vw:
        assert "yuv420p" in vw.command
        for a in frames(30, 240, 320, 4, seed=4):
            vw.write(a)
    s = probe(path)
    assert (s["width"], s["height"], s["codec_name"], s["pix_fmt"]) == (320, 240, "h264", "yuv420p")
    assert int(s["nb_read_frames"]) == 30
    assert s["r_frame_rate"] == "24/1"


def test_wrong_frames_are_refused_with_clear_errors(tmp_path):
    vw = VideoWriter(tmp_path / "x.mkv", 64, 48, 30, format="BGRA", codec="ffv1")
    with pytest.raises(ValueError, match=r"shape \(48, 64, 3\) .* expected \(48, 64, 4\)"):
        vw.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(64, 48, 4\) .* width 48"):
        vw.write(np.zeros((64, 48, 4), np.uint8))
    with pytest.raises(ValueError, match="itemsize 2 does not fit BGRA"):
        vw.write(np.zeros((48, 64, 4), np.uint16))
    with pytest.raises(ValueError, match="100 bytes is too small: 12288 bytes needed"):
        vw.write(b"x" * 100)
    with pytest.raises(ValueError, match="only the first dimension may have gaps"):
        vw.write(np.zeros((48, 128, 4), np.uint8)[:, ::2])
    pool = framebus.FramePool()
    with pytest.raises(ValueError, match="format mismatch: .* expects BGRA, got RGBA"):
        vw.write(pool.acquire(64, 48, "RGBA"))
    with pytest.raises(ValueError, match="size mismatch: .* expects 64x48, got 32x48"):
        vw.write(pool.acquire(32, 48, "BGRA"))
    vw.write(bytes(64 * 48 * 4))  # flat bytes of the right size are fine
    assert vw.frames_written == 1
    vw.close()
    with pytest.raises(ValueError, match="closed"):
        vw.write(bytes(64 * 48 * 4))


def test_bad_settings_are_refused_before_starting(tmp_path):
    with pytest.raises(ValueError, match="unknown pixel format"):
        VideoWriter(tmp_path / "x.mp4", 64, 48, 30, format="YUYV")
    with pytest.raises(ValueError, match="65x48.*even"):
        VideoWriter(tmp_path / "x.mp4", 65, 48, 30)
    with pytest.raises(ValueError, match="invalid fps=-1"):
        VideoWriter(tmp_path / "x.mp4", 64, 48, -1)
    with pytest.raises(FileNotFoundError, match="/nonexistent/ffmpeg"):
        VideoWriter(tmp_path / "x.mp4", 64, 48, 30, ffmpeg="/nonexistent/ffmpeg")


def test_bad_codec_close_raises_with_stderr_tail(tmp_path):
    vw = VideoWriter(tmp_path / "x.mkv", 64, 48, 30, codec="no_such_codec_zz")
    a = np.zeros((48, 64, 4), np.uint8)
    with pytest.raises(FFmpegError) as info:
        for _ in range(200):  # a write may see the broken pipe first
            vw.write(a)
        vw.close()
    assert "no_such_codec_zz" in str(info.value)
    assert "no_such_codec_zz" in info.value.stderr
    assert isinstance(info.value, framebus.FramebusError)
    with pytest.raises(FFmpegError):
        vw.close()  # the failure is reported again, not swallowed


def test_killed_ffmpeg_raises_instead_of_hanging(tmp_path):
    import os
    import signal

    vw = VideoWriter(tmp_path / "x.mp4", 640, 480, 30, preset="ultrafast")
    a = np.zeros((480, 640, 4), np.uint8)
    vw.write(a)
    os.kill(vw.pid, signal.SIGKILL)
    with pytest.raises(FFmpegError, match="signal: 9"):
        for _ in range(500):
            vw.write(a)
        vw.close()


def test_exception_in_block_wins_and_file_is_still_finished(tmp_path):
    path = tmp_path / "x.mkv"
    a = np.full((16, 16, 4), 7, np.uint8)
    with (
        pytest.raises(RuntimeError, match="boom"),
        VideoWriter(path, 16, 16, 10, codec="ffv1") as vw,
    ):
        vw.write(a)
        raise RuntimeError("boom")
    assert vw.closed
    assert decode(path, "bgra") == a.tobytes()


def test_stderr_is_drained_so_a_chatty_ffmpeg_cannot_deadlock(tmp_path):
    # A wrapper that writes 1 MB to stderr before starting ffmpeg: without a
    # reader on stderr it would block forever, and so would our writes.
    wrapper = tmp_path / "chatty-ffmpeg"
    wrapper.write_text(
        "#!/bin/sh\nhead -c 1000000 /dev/zero | tr '\\0' 'x' >&2\nexec ffmpeg \"$@\"\n"
    )
    wrapper.chmod(0o755)
    code = (
        "import sys, numpy as np\n"
        "from framebus._framebus import VideoWriter\n"
        "with VideoWriter(sys.argv[1], 320, 240, 30, codec='ffv1', ffmpeg=sys.argv[2]) as vw:\n"
        "    for i in range(40):\n"
        "        vw.write(np.full((240, 320, 4), i, np.uint8))\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "c.mkv"), str(wrapper)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert len(decode(tmp_path / "c.mkv", "bgra")) == 40 * 320 * 240 * 4
