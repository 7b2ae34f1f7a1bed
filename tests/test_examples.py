"""The capture → inference example (examples/capture_inference.py) run as a user runs it.

It is the channel issue's showcase: with slow inference in latest mode the age of the
frames must stay flat (stale frames skipped and counted), and in lossless mode every
frame arrives, in order, with the producer held back. These tests parse what it prints.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "capture_inference.py"
ROW = re.compile(
    r"^\s*(\d+) \|\s*(\d+) \|\s*(\d+) \|\s*([\d.]+) /\s*([\d.]+) \|\s*([\d.]+) /\s*([\d.]+)$"
)


def run_example(*args: str, display: str | None = None) -> tuple[list[tuple], str]:
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    if display:
        env["DISPLAY"] = display
    p = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    rows = [tuple(float(x) for x in m.groups()) for m in map(ROW.match, p.stdout.splitlines()) if m]
    return rows, p.stdout


def counts(out: str) -> tuple[int, int, int]:
    sent = int(re.search(r"producer: sent (\d+) frames", out).group(1))
    m = re.search(r"consumer: received (\d+), skipped (\d+)", out)
    return sent, int(m.group(1)), int(m.group(2))


def check_latest(rows, out, infer_ms):
    assert len(rows) >= 3, out
    sent, received, skipped = counts(out)
    # Slow inference keeps up by skipping: nearly every frame is either taken or counted
    # as skipped (the last ones may still be pending when the producer closes).
    assert received >= 10 and skipped > received, out
    assert sent - 5 <= received + skipped <= sent, out
    for _, _, _, recv_p50, _, done_p50, _ in rows:
        # the frame a consumer gets is the newest: at most about one producer period old
        assert recv_p50 < 60, out
        assert done_p50 < infer_ms + 100, out
    # flat, not growing: a queue would add ~0.9 s per second here
    assert rows[-1][5] - rows[0][5] < 50, out


def test_latest_mode_keeps_the_age_flat_under_slow_inference():
    rows, out = run_example("--seconds", "4", "--fps", "60", "--infer-ms", "100")
    check_latest(rows, out, 100)
    assert "producer: synthetic 1080p frames" in out, out


def test_latest_mode_with_screen_capture_into_the_channel_pool(xvfb):
    import framebus

    if not hasattr(framebus, "grab"):
        pytest.fail("framebus.grab is missing: the example would silently fall back")
    rows, out = run_example(
        "--seconds", "4", "--fps", "30", "--infer-ms", "100", display=xvfb.display
    )
    check_latest(rows, out, 100)
    assert "producer: screen (framebus.grab" in out, out


def test_lossless_mode_delivers_every_frame_and_holds_the_producer_back():
    rows, out = run_example(
        "--mode", "lossless", "--depth", "4", "--seconds", "3", "--fps", "60", "--infer-ms", "50"
    )
    sent, received, skipped = counts(out)
    assert skipped == 0 and received == sent, out
    # the bounded queue holds the producer to the consumer's pace (~20 fps, not 60)
    assert sent < 0.6 * 60 * 3, out
    assert len(rows) >= 2, out
