"""Screen capture under Xvfb: pixel-exact grabs of a pattern drawn on the root
window, both backends, monitors, regions on every edge, bad regions, threads,
held frames, memory, PNG output and continuous capture."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import framebus
import numpy as np
import pytest
from framebus import _framebus
from framebus.capture import Capture, Grabber, Region, grab

W, H = 1920, 1080


def pattern(left: int, top: int, width: int, height: int) -> np.ndarray:
    """B = x, G = y, R = x ^ 3y (mod 256): every pixel of a row/column differs."""
    y, x = np.mgrid[top : top + height, left : left + width]
    out = np.zeros((height, width, 4), np.uint8)
    out[..., 0] = x & 0xFF
    out[..., 1] = y & 0xFF
    out[..., 2] = (x ^ (3 * y)) & 0xFF
    return out


def draw(display: str, left: int, top: int, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    _framebus._test_put_image(display, left, top, w, h, np.ascontiguousarray(img).tobytes())


def rgb(frame) -> np.ndarray:
    """The frame's B, G, R bytes (a depth-24 screen leaves the 4th byte undefined)."""
    return np.asarray(frame)[..., :3]


@pytest.fixture(scope="module")
def screen(xvfb):
    draw(xvfb.display, 0, 0, pattern(0, 0, W, H))
    return xvfb


@pytest.fixture(scope="module")
def grabber(screen):
    with Grabber(screen.display) as g:
        yield g


EDGE_REGIONS = [
    (0, 0, W, H),
    (0, 0, 1, 1),
    (W - 1, H - 1, 1, 1),
    (0, 0, W, 1),
    (0, H - 1, W, 1),
    (0, 0, 1, H),
    (W - 1, 0, 1, H),
    (W - 7, 100, 7, 13),
    (123, 45, 678, 91),
]


@pytest.mark.parametrize("backend", ["xshm", "xgetimage"])
def test_pixel_exact_on_every_edge(screen, backend):
    with Grabber(screen.display, backend=backend) as g:
        assert g.backend == backend
        for left, top, w, h in EDGE_REGIONS:
            f = g.grab(Region(left, top, w, h))
            assert (f.width, f.height, f.format, f.stride) == (w, h, "BGRA", w * 4)
            assert f.readonly
            np.testing.assert_array_equal(rgb(f), pattern(left, top, w, h)[..., :3])


def test_region_forms_are_equivalent(grabber):
    expected = pattern(10, 20, 30, 40)[..., :3]
    for region in (
        Region(10, 20, 30, 40),
        {"left": 10, "top": 20, "width": 30, "height": 40},
        (10, 20, 40, 60),  # (left, top, right, bottom), as mss and PIL
        [10, 20, 40, 60],
    ):
        np.testing.assert_array_equal(rgb(grabber.grab(region)), expected)
    whole = grabber.grab()
    assert (whole.width, whole.height) == (W, H)
    assert grabber.grab(0).shape == whole.shape  # monitor 0 = the whole screen


def test_frame_is_zero_copy_view_of_the_pool_slot(grabber):
    f = grabber.grab((0, 0, 64, 64))
    a = np.asarray(f)
    assert a.ctypes.data == f.address
    assert not a.flags.writeable
    assert memoryview(f).readonly


def test_module_level_grab(screen):
    f = grab((5, 6, 105, 56), display=screen.display)
    np.testing.assert_array_equal(rgb(f), pattern(5, 6, 100, 50)[..., :3])


@pytest.mark.parametrize(
    "region",
    [
        (W - 10, 0, W + 1, 10),
        (0, H - 1, 10, H + 1),
        {"left": -1, "top": 0, "width": 5, "height": 5},
        {"left": 0, "top": 0, "width": W + 1, "height": 1},
        Region(1900, 1070, 21, 10),
    ],
)
def test_bad_regions_raise_valueerror_naming_the_bounds(grabber, region):
    with pytest.raises(ValueError, match=r"the screen is 0,0 1920x1080"):
        grabber.grab(region)
    assert grabber.backend == "xshm"  # a bad region never switches backends
    assert grabber.backend_reason is None


def test_bad_region_arguments(grabber):
    with pytest.raises(ValueError, match="0x5 is empty"):
        grabber.grab({"left": 0, "top": 0, "width": 0, "height": 5})
    with pytest.raises(ValueError, match='"height" is missing'):
        grabber.grab({"left": 0, "top": 0, "width": 5})
    with pytest.raises(ValueError, match="3 values"):
        grabber.grab((0, 0, 5))
    with pytest.raises(ValueError, match=r"box \(10, 0, 5, 5\) is empty"):
        grabber.grab((10, 0, 5, 5))
    with pytest.raises(TypeError, match="str"):
        grabber.grab("everything")
    with pytest.raises(ValueError, match=r"monitor 9 does not exist: 2 monitors"):
        grabber.grab(9)
    with pytest.raises(ValueError, match='unknown capture backend "dx"'):
        Grabber(backend="dx")


def test_tcp_display_falls_back_to_xgetimage(screen):
    with Grabber(screen.tcp_display) as g:
        assert g.backend == "xgetimage"
        assert "TCP" in g.backend_reason
        f = g.grab((100, 200, 300, 250))
        np.testing.assert_array_equal(rgb(f), pattern(100, 200, 200, 50)[..., :3])
    with pytest.raises(framebus.CaptureError, match="xshm is not available.*TCP"):
        Grabber(screen.tcp_display, backend="xshm")


def test_server_without_mit_shm_falls_back_with_the_reason(xvfb_factory):
    x = xvfb_factory(64, 48, extra=("-extension", "MIT-SHM"))
    draw(x.display, 0, 0, pattern(0, 0, 64, 48))
    with Grabber(x.display) as g:
        assert g.backend == "xgetimage"
        assert g.backend_reason == "the X server has no MIT-SHM extension"
        np.testing.assert_array_equal(rgb(g.grab()), pattern(0, 0, 64, 48)[..., :3])
    with pytest.raises(framebus.CaptureError, match="no MIT-SHM extension"):
        Grabber(x.display, backend="xshm")


def test_forced_xgetimage_records_the_reason(screen):
    with Grabber(screen.display, backend="xgetimage") as g:
        assert g.backend == "xgetimage"
        assert g.backend_reason == "xgetimage was requested"


def test_bad_display_is_a_capture_error():
    with pytest.raises(framebus.CaptureError, match="cannot open X display"):
        Grabber(":54321")


def test_grab_into_a_given_pool_reuses_its_slot(grabber):
    pool = framebus.FramePool(max_slots=2)
    first = grabber.grab((0, 0, 100, 100), pool=pool)
    slot = first.slot_id
    first.release()
    attached = grabber.attached_segments
    for _ in range(20):
        f = grabber.grab((0, 0, 100, 100), pool=pool)
        assert f.slot_id == slot
        del f
    assert grabber.attached_segments == attached  # reused slot: no new segment
    assert pool.stats()["reuses"] >= 20
    held = [grabber.grab((0, 0, 100, 100), pool=pool) for _ in range(2)]
    with pytest.raises(framebus.PoolExhausted):
        grabber.grab((0, 0, 100, 100), pool=pool)
    del held
    pool.trim()
    grabber.grab((0, 0, 8, 8))  # the next grab detaches the trimmed slots' segments
    assert grabber.attached_segments <= attached


def test_threads_grabbing_at_once(screen):
    g = Grabber(screen.display)
    errors = []

    def worker(i: int) -> None:
        try:
            for k in range(40):
                left, top = 37 * i + k, 11 * k + i
                own = grab if k % 2 else g.grab
                kw = {"display": screen.display} if k % 2 else {}
                f = own((left, top, left + 64 + i, top + 32), **kw)
                np.testing.assert_array_equal(rgb(f), pattern(left, top, 64 + i, 32)[..., :3])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_held_frame_unchanged_while_thousands_more_are_captured(xvfb_factory):
    x = xvfb_factory(320, 240)
    draw(x.display, 0, 0, pattern(0, 0, 320, 240))
    with Grabber(x.display) as g:
        held = g.grab()
        view = np.asarray(held)
        before = view.copy()
        draw(x.display, 0, 0, np.full((240, 320, 4), 0x33, np.uint8))
        for _ in range(3000):
            f = g.grab((0, 0, 320, 240))
            assert f.slot_id != held.slot_id
        assert rgb(f)[0, 0].tolist() == [0x33] * 3
        np.testing.assert_array_equal(view, before)
        np.testing.assert_array_equal(rgb(held), pattern(0, 0, 320, 240)[..., :3])


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_rss_flat_over_10000_grabs(grabber):
    for _ in range(500):
        grabber.grab((0, 0, 256, 256))
    before = _rss()
    total = 0
    for i in range(10_000):
        f = grabber.grab(Region(i % 100, 0, 256, 256))
        total += f.nbytes
        del f
    grown = _rss() - before
    assert total == 10_000 * 256 * 256 * 4
    assert grown < 4 << 20, f"RSS grew by {grown} bytes over 10 000 grabs"


def test_monitors_from_randr_setmonitor_and_resize_without_reopening(xvfb_factory):
    x = xvfb_factory(800, 600)
    g = Grabber(x.display)
    mons = g.monitors
    assert mons[0] == {
        "left": 0,
        "top": 0,
        "width": 800,
        "height": 600,
        "name": "all",
        "output": None,
        "is_primary": False,
        "description": None,
        "scale": 1,
        "transform": 0,
        "physical_width": 800,
        "physical_height": 600,
    }
    assert [m["name"] for m in mons[1:]] == ["screen"]
    r = x.run("xrandr", "--setmonitor", "LEFT", "400/100x600/100+0+0", "none")
    assert r.returncode == 0, r.stderr
    r = x.run("xrandr", "--setmonitor", "RIGHT", "400/100x300/100+400+300", "none")
    assert r.returncode == 0, r.stderr
    x.run("xrandr", "--output", "screen", "--primary")
    mons = g.monitors
    by_name = {m["name"]: m for m in mons[1:]}
    assert set(by_name) == {"LEFT", "RIGHT", "screen"}
    assert (by_name["RIGHT"]["left"], by_name["RIGHT"]["top"]) == (400, 300)
    assert by_name["screen"]["is_primary"] and not by_name["LEFT"]["is_primary"]
    draw(x.display, 0, 0, pattern(0, 0, 800, 600))
    idx = 1 + [m["name"] for m in mons[1:]].index("RIGHT")
    f = g.grab(idx)
    assert (f.width, f.height) == (400, 300)
    np.testing.assert_array_equal(rgb(f), pattern(400, 300, 400, 300)[..., :3])
    # Shrink the screen; the same grabber sees it at the next grab.
    x.run("xrandr", "--fb", "640x480")
    deadline = time.monotonic() + 5
    while g.screen_size != (640, 480) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert g.screen_size == (640, 480)
    assert g.grab().shape == (480, 640, 4)
    with pytest.raises(ValueError, match="the screen is 0,0 640x480"):
        g.grab((0, 0, 800, 600))


def test_cursor_is_composited_only_when_asked(xvfb_factory):
    x = xvfb_factory(640, 480)  # the pointer starts at the centre
    with Grabber(x.display) as g:
        box = (280, 200, 360, 280)
        plain, with_cursor = rgb(g.grab(box)), rgb(g.grab(box, cursor=True))
        changed = np.argwhere((plain != with_cursor).any(axis=2))
        assert len(changed) > 20
        # Every changed pixel is near the pointer (320, 240) in region coordinates.
        assert changed.min() >= 40 - 16 and changed.max() <= 40 + 16


def test_save_png_round_trips_with_pillow(grabber, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    f = grabber.grab((300, 400, 500, 480))
    fast, small = tmp_path / "fast.png", tmp_path / "small.png"
    f.save_png(fast)
    f.save_png(str(small), level=9)
    for p in (fast, small):
        with Image.open(p) as im:
            assert im.mode == "RGB" and im.size == (200, 80)
            np.testing.assert_array_equal(np.asarray(im), rgb(f)[..., ::-1])
    assert small.stat().st_size < fast.stat().st_size
    with pytest.raises(ValueError, match="level=10"):
        f.save_png(tmp_path / "x.png", level=10)
    with pytest.raises(OSError, match="cannot create"):
        f.save_png(tmp_path / "missing" / "x.png")


# --- continuous capture -------------------------------------------------------


def test_latest_never_repeats_and_counts_drops(screen):
    with Capture(region=(0, 0, 320, 240), target_fps=200, buffer=2, display=screen.display) as cap:
        assert cap.backend == "xshm"
        seqs = []
        for _ in range(15):
            f = cap.latest(timeout=5)
            seqs.append(f.seq)
            assert f.timestamp <= time.monotonic_ns()
            np.testing.assert_array_equal(rgb(f)[:5, :5], pattern(0, 0, 5, 5)[..., :3])
            time.sleep(0.02)  # a consumer slower than 200 fps
        assert seqs == sorted(set(seqs)), seqs
        stats = cap.stats
        assert stats["delivered"] == 15
        assert stats["dropped"] > 0
        # Every gap in the sequence numbers is a counted drop.
        gaps = sum(b - a - 1 for a, b in zip(seqs, seqs[1:])) + seqs[0] - 1
        assert gaps <= stats["dropped"]
        again = cap.latest(timeout=0, allow_repeat=True)
        assert again.seq >= seqs[-1]
    assert not cap.running
    with pytest.raises(framebus.CaptureError, match="capture stopped"):
        cap.latest(timeout=1)


def test_latest_blocks_for_a_new_frame_and_times_out(screen):
    with Capture(region=(0, 0, 64, 64), target_fps=5, display=screen.display) as cap:
        a = cap.latest(timeout=5)
        t0 = time.monotonic()
        b = cap.latest(timeout=5)
        assert b.seq > a.seq
        assert time.monotonic() - t0 > 0.1  # waited for the next 5 fps frame
        assert b.timestamp - a.timestamp >= 150_000_000
        with pytest.raises(TimeoutError):
            cap.latest(timeout=0.001)


def test_pacing_holds_the_target_rate(screen):
    with Capture(region=(0, 0, 64, 64), target_fps=40, display=screen.display) as cap:
        first = cap.latest(timeout=5)
        f = first
        while f.timestamp - first.timestamp < 1_000_000_000:
            f = cap.next(timeout=5)
        n = f.seq - first.seq
        assert 34 <= n <= 44, n  # 40 fps for 1 s; the lower bound allows a loaded CI machine


def test_frames_iterator_ends_when_stopped_from_another_thread(screen):
    cap = Capture(region=1, target_fps=100, buffer=4, display=screen.display)
    assert cap.region == Region(0, 0, W, H)
    threading.Timer(0.3, cap.stop).start()
    t0 = time.monotonic()
    seqs = [f.seq for f in cap.frames(timeout=5)]
    assert time.monotonic() - t0 < 2
    assert len(seqs) > 5 and seqs == sorted(set(seqs))
    assert not cap.running


def test_slow_consumer_keeps_memory_bounded(screen):
    pool = framebus.FramePool()
    with Capture(
        region=(0, 0, 256, 256), target_fps=500, buffer=3, pool=pool, display=screen.display
    ) as cap:
        for _ in range(10):
            cap.latest(timeout=5)
            time.sleep(0.03)
        stats = pool.stats()
        # ring (3) + the frame being grabbed + the one just returned, at most.
        assert stats["slots"] <= 5, stats
        assert cap.dropped > 10  # 500 fps wanted, ~3 frames taken per 0.1 s


def test_on_demand_capture_stays_one_frame_ahead(screen):
    with Capture(region=(0, 0, 128, 128), target_fps=None, display=screen.display) as cap:
        seqs = []
        for _ in range(10):
            f = cap.latest(timeout=5)
            seqs.append(f.seq)
            time.sleep(0.01)
            assert cap.stats["buffered"] <= 1
        # No grab is wasted: every captured frame is delivered, in order.
        assert seqs == list(range(seqs[0], seqs[0] + 10))
        assert cap.dropped == 0
        assert cap.captured <= 10 + 1


def test_capture_bad_arguments(screen):
    with pytest.raises(ValueError, match="buffer=0"):
        Capture(buffer=0, display=screen.display)
    with pytest.raises(ValueError, match="target_fps"):
        Capture(target_fps=-1, display=screen.display)
    with pytest.raises(ValueError, match="the screen is 0,0 1920x1080"):
        Capture(region=(0, 0, 4000, 10), display=screen.display)


def test_gil_is_released_while_waiting(screen):
    with Capture(region=(0, 0, 64, 64), target_fps=2, display=screen.display) as cap:
        cap.latest(timeout=5)
        ticks = 0
        done = threading.Event()

        def spin() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1

        t = threading.Thread(target=spin)
        t.start()
        cap.latest(timeout=5)  # ~0.5 s wait with the GIL released
        done.set()
        t.join()
        assert ticks > 10_000


# --- CLI ----------------------------------------------------------------------


def _cli_binary():
    root = Path(__file__).resolve().parents[1]
    for candidate in (
        root / "target" / "release" / "framebus",
        root / "target" / "debug" / "framebus",
    ):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("framebus")
    if found is None:
        pytest.skip("the framebus CLI is not built (cargo build -p framebus-cli)")
    return found


def test_cli_grab_writes_pixel_exact_png(screen, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    cli = _cli_binary()
    out = subprocess.run(
        [cli, "grab", "-d", screen.display, "-c", "40,30,200,100"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    path = tmp_path / "sct-40x30_200x100.png"  # mss's template for --coordinates
    assert out.stdout.strip() == str(path)
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im), pattern(30, 40, 200, 100)[..., 2::-1])
    out = subprocess.run(
        [
            cli,
            "grab",
            "-d",
            screen.display,
            "-m",
            "-1",
            "-o",
            "all-{mon}-{width}x{height}.png",
            "-q",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout == ""
    assert (tmp_path / "all-0-1920x1080.png").exists()
    bad = subprocess.run(
        [cli, "grab", "-d", screen.display, "-m", "9"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "monitor 9 does not exist" in bad.stderr
