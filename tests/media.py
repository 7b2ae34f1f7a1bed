"""Reading back what FFmpeg wrote, for the tests that encode (VideoWriter, `framebus
record`): stream facts from ffprobe and raw pixels from ffmpeg. Not a test module."""

from __future__ import annotations

import json
import os
import subprocess


def probe(path) -> dict:
    """The first video stream's size, decoded frame count, codec, pixel format and rate."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=width,height,nb_read_frames,codec_name,pix_fmt,r_frame_rate",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        check=True,
        text=True,
    )
    return json.loads(out.stdout)["streams"][0]


def decode(path, pix_fmt: str, frames: int | None = None) -> bytes:
    """Raw `pix_fmt` pixels of every frame (or of the first `frames`)."""
    limit = [] if frames is None else ["-frames:v", str(frames)]
    cmd = ["ffmpeg", "-v", "error", "-i", str(path), *limit, "-f", "rawvideo"]
    out = subprocess.run([*cmd, "-pix_fmt", pix_fmt, "-"], capture_output=True, check=True)
    return out.stdout


def ffmpeg_bytes_read(pid: int) -> int:
    """Bytes the children of `pid` (its FFmpeg) have read so far (/proc/PID/io rchar)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids = f.read().split()
        except OSError:
            continue
        for kid in kids:
            try:
                with open(f"/proc/{kid}/io") as f:
                    for line in f:
                        if line.startswith("rchar:"):
                            total = max(total, int(line.split()[1]))
            except OSError:
                pass
    return total
