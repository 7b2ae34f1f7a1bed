"""framebus.pipe / sync / close and framebus.turbopipe: bytes, order, lifetimes, errors.

Each test pipes into a reader subprocess that hashes everything it receives, so
what is checked is what really came out of the far end of the pipe.
"""

from __future__ import annotations

import gc
import hashlib
import os
import subprocess
import sys
import time
import weakref

import framebus
import numpy as np
import pytest
from framebus import _framebus as fb

# Reads stdin to EOF (optionally after a delay) and prints "<bytes> <sha256>".
READER = r"""
import hashlib, sys, time
time.sleep(float(sys.argv[1]))
h = hashlib.sha256(); n = 0
while True:
    b = sys.stdin.buffer.read1(1 << 20)
    if not b:
        break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"""


class Reader:
    def __init__(self, delay: float = 0.0):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", READER, str(delay)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.fd = self.proc.stdin.fileno()

    def finish(self) -> tuple[int, str]:
        fb.close(self.fd)  # flush and stop the writer before the fd goes away
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        assert self.proc.wait(timeout=30) == 0
        n, digest = out.split()
        return int(n), digest.decode()


def sha(*parts: bytes) -> tuple[int, str]:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return sum(len(p) for p in parts), h.hexdigest()


def pattern(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def test_many_frames_of_several_sizes_arrive_byte_exact():
    r = Reader()
    pool = framebus.FramePool()
    sent = []
    sizes = [1, 100, 4096, 65537, 1280 * 720 * 3, 1920 * 1080 * 4]
    for i in range(36):
        n = sizes[i % len(sizes)]
        data = pattern(n, i)
        kind = i % 5
        if kind == 0:
            obj = data
        elif kind == 1:
            obj = data.tobytes()
        elif kind == 2:
            obj = bytearray(data.tobytes())
        elif kind == 3:
            obj = memoryview(data.tobytes())
        else:  # a framebus Frame (a GRAY8 image of about n pixels)
            w = min(n, 4096)
            data = data[: w * (n // w)]
            obj = pool.acquire(w, n // w, "GRAY8")
            np.asarray(obj).reshape(-1)[:] = data
        sent.append(data.tobytes())
        fb.pipe(obj, r.fd)
    fb.sync(fd=r.fd)
    assert fb.pipe_stats(r.fd)["bytes_written"] == sum(map(len, sent))
    assert r.finish() == sha(*sent)
    assert fb.pipe_stats(r.fd) is None  # close() stopped the worker


def test_order_is_kept_per_fd_across_interleaved_fds():
    readers = [Reader() for _ in range(3)]
    sent = [[] for _ in readers]
    for i in range(45):
        k = (i * 7) % 3
        data = pattern(50_000 + 997 * i, i).tobytes()
        sent[k].append(data)
        fb.pipe(data, readers[k].fd)
    for r, s in zip(readers, sent):
        assert r.finish() == sha(*s)


def test_same_array_twice_then_modified_after_sync_keeps_first_bytes():
    r = Reader(delay=0.5)  # the reader starts late: the writes are still queued
    a = pattern(4 << 20, 1)  # larger than the pipe buffer
    original = a.tobytes()
    fb.pipe(a, r.fd)
    fb.pipe(a, r.fd)
    fb.sync(a)
    a[:] = 0  # only after sync
    fb.pipe(a, r.fd)
    assert r.finish() == sha(original, original, bytes(len(original)))


def test_object_deleted_right_after_pipe_is_still_written_and_then_freed():
    r = Reader(delay=0.3)
    a = pattern(3 << 20, 2)
    expected = a.tobytes()
    ref = weakref.ref(a)
    fb.pipe(a, r.fd)
    del a
    gc.collect()
    assert ref() is not None, "the export keeps the array alive until written"
    fb.pipe(bytearray(b"tail" * 1000), r.fd)  # a temporary, gone at once
    fb.sync(fd=r.fd)
    assert ref() is None, "sync released the export"
    assert r.finish() == sha(expected, b"tail" * 1000)


def test_bytearray_cannot_be_resized_until_sync():
    r = Reader(delay=0.3)
    b = bytearray(pattern(2 << 20, 3).tobytes())
    first = bytes(b)
    fb.pipe(b, r.fd)
    with pytest.raises(BufferError):
        b.extend(b"x")  # the export is held while the write is pending
    fb.sync(b)
    b.extend(b"x")
    assert r.finish() == sha(first)


def test_frame_lease_is_held_until_written_then_slot_is_free():
    r = Reader(delay=0.3)
    pool = framebus.FramePool()
    f = pool.acquire(1920, 1080, "BGRA")
    np.asarray(f)[:] = 9
    fb.pipe(f, r.fd)
    f.release()  # the queued job still holds a lease
    assert pool.stats()["slots_in_use"] == 1
    fb.sync(fd=r.fd)
    assert pool.stats()["slots_in_use"] == 0
    assert r.finish() == sha(bytes([9]) * (1920 * 1080 * 4))


def test_padded_rows_are_written_tight_and_non_contiguous_is_refused():
    r = Reader()
    img = pattern(100 * 64 * 4, 5).reshape(100, 64, 4)
    crop = img[:, 8:40]  # rows with gaps: written as tight rows
    fb.pipe(crop, r.fd)
    with pytest.raises(ValueError, match="only the first dimension may have gaps"):
        fb.pipe(img[:, ::2], r.fd)
    assert r.finish() == sha(np.ascontiguousarray(crop).tobytes())


def test_bad_arguments_raise_value_error():
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match="invalid fd=-1"):
            fb.pipe(b"x", -1)
        with pytest.raises(TypeError, match="int or have fileno"):
            fb.pipe(b"x", "nope")
        with pytest.raises(TypeError, match="exporting a buffer"):
            fb.pipe(12345, w)
    finally:
        os.close(r)
        os.close(w)


def test_killed_reader_raises_broken_pipe_not_a_hang():
    r = Reader()
    chunk = pattern(1 << 20, 6)
    fb.pipe(chunk, r.fd)
    fb.sync(fd=r.fd)
    r.proc.kill()
    r.proc.wait()
    t0 = time.monotonic()
    with pytest.raises(BrokenPipeError) as info:
        for _ in range(100):
            fb.pipe(chunk, r.fd)
        fb.sync(fd=r.fd)
    assert time.monotonic() - t0 < 10
    assert "nothing more is written" in str(info.value)
    # Sticky: every later call for this fd fails too, nothing is written.
    with pytest.raises(BrokenPipeError):
        fb.pipe(chunk, r.fd)
    with pytest.raises(BrokenPipeError):
        fb.sync()
    fb.close(r.fd)  # already reported: close is quiet and forgets the fd
    r.proc.stdin.close()


def test_bad_fd_raises_ebadf():
    rfd, wfd = os.pipe()
    os.close(rfd)
    os.close(wfd)  # wfd is now a closed number
    fb.pipe(b"abc", wfd)
    with pytest.raises(OSError) as info:
        fb.sync(fd=wfd)
    assert info.value.errno == 9  # EBADF
    with pytest.raises(OSError):
        fb.pipe(b"abc", wfd)  # sticky until close
    fb.close(wfd)


def test_pipe_is_enlarged():
    r = Reader()
    fb.pipe(b"x", r.fd)
    size = fb.pipe_stats(r.fd)["pipe_size"]
    with open("/proc/sys/fs/pipe-max-size") as f:
        assert size == int(f.read())
    r.finish()


def test_turbopipe_api_is_a_drop_in():
    from framebus import turbopipe

    r = Reader()
    bufs = [pattern(1 << 20, 10 + i) for i in range(4)]
    sent = []
    for i in range(12):
        obj = bufs[i % 4]
        turbopipe.sync(obj)  # previous write of this buffer done before reuse
        obj[:16] = i
        sent.append(obj.tobytes())
        turbopipe.pipe(obj, r.fd)
    for obj in bufs:
        turbopipe.sync(obj)
        turbopipe.done(obj)
    turbopipe.sync()
    assert r.finish() == sha(*sent)
    assert {"pipe", "sync", "done", "close"} <= set(turbopipe.__all__)


def test_turbopipe_1x_calls_sync_everything_and_close_every_fd():
    from framebus import turbopipe

    readers = [Reader(delay=0.2), Reader(delay=0.2)]
    sent: list[list[bytes]] = [[], []]
    buf = bytearray(pattern(1 << 20, 40).tobytes())
    for i in range(6):
        r = i % 2
        view = memoryview(buf)
        turbopipe.pipe(view, readers[r].fd)  # 1.x: pipe(buffer, fileno)
        sent[r].append(bytes(buf))
        turbopipe.sync()  # 1.x: sync(buffer=None) waits for every buffer and fd
        view.release()
        buf[:16] = bytes([i]) * 16  # safe: every queued write has finished
    for r in readers:
        assert fb.pipe_stats(r.fd)["done"] == 3
    turbopipe.close()  # 1.x: no fd, every fd piped to through the module
    for r in readers:
        assert fb.pipe_stats(r.fd) is None, "close() left a writer thread running"
    assert [r.finish() for r in readers] == [sha(*s) for s in sent]


def test_turbopipe_close_without_fd_closes_all_then_raises_the_write_error():
    from framebus import turbopipe

    dead, alive = Reader(), Reader()
    dead.proc.kill()
    dead.proc.wait()
    data = pattern(1 << 20, 41)
    turbopipe.pipe(data, alive.fd)
    turbopipe.pipe(data, dead.fd)  # fails in the writer thread, reported by close()
    with pytest.raises(BrokenPipeError):
        turbopipe.close()
    assert fb.pipe_stats(alive.fd) is None and fb.pipe_stats(dead.fd) is None
    assert alive.finish() == sha(data.tobytes())
    dead.proc.stdin.close()


def test_splice_holds_the_buffer_until_the_reader_has_read_it():
    r = Reader(delay=0.6)  # reads only after 0.6 s
    a = pattern(512 << 10, 20)  # fits in the 1 MiB pipe: vmsplice returns at once
    original = a.tobytes()
    fb.pipe(a, r.fd, splice=True)
    t0 = time.monotonic()
    fb.sync(a)  # the pages sit in the pipe by reference until read
    assert time.monotonic() - t0 > 0.2, "sync returned before the reader read the spliced pages"
    a[:] = 0  # safe now: the reader has copied the bytes out
    fb.pipe(a, r.fd, splice=True)
    assert r.finish() == sha(original, bytes(len(original)))


def test_splice_many_frames_byte_exact_and_reader_death_raises():
    r = Reader()
    pool = framebus.FramePool(max_slots=3, on_exhausted="block")
    sent = []
    for i in range(30):
        f = pool.acquire(640, 480, "BGRA")  # slots are reused as soon as they are read
        np.asarray(f)[:] = i
        sent.append(bytes([i]) * (640 * 480 * 4))
        fb.pipe(f, r.fd, splice=True)
        f.release()
    assert r.finish() == sha(*sent)
    assert pool.stats()["maps"] <= 3

    r = Reader()
    fb.pipe(pattern(1 << 20, 1), r.fd, splice=True)
    fb.sync(fd=r.fd)
    r.proc.kill()
    r.proc.wait()
    with pytest.raises(BrokenPipeError):
        for _ in range(50):
            fb.pipe(pattern(1 << 20, 2), r.fd, splice=True)
        fb.sync(fd=r.fd)
    fb.close(r.fd)
    r.proc.stdin.close()


def test_moderngl_buffer_is_piped_and_stays_mapped_until_written(xvfb, monkeypatch):
    # A standalone context on Xvfb through GLX with Mesa's software renderer (llvmpipe),
    # as CI has it (scripts/setup.sh installs Mesa, requirements-test.txt moderngl);
    # a missing context is a failure here, not a skip.
    moderngl = pytest.importorskip("moderngl")
    from framebus import turbopipe

    monkeypatch.setenv("DISPLAY", xvfb.display)
    ctx = moderngl.create_standalone_context()  # default on Linux: GLX on $DISPLAY
    data = pattern(2 << 20, 30).tobytes()
    buf = ctx.buffer(data=data)
    r = Reader(delay=0.3)
    fb.pipe(buf.mglo, r.fd)  # as in TurboPipe 2.x's README
    fb.sync(buf.mglo)
    buf.write(bytes(len(data)))  # only after sync
    turbopipe.pipe(buf, r.fd)  # TurboPipe 1.x took the moderngl.Buffer itself
    turbopipe.sync(buf)
    buf.write(data)
    fb.pipe(buf.mglo, r.fd)
    assert r.finish() == sha(data, bytes(len(data)), data)
    buf.release()
    ctx.release()


def test_turbopipe_example_loop_with_fresh_views_of_the_mapping(xvfb, monkeypatch):
    # TurboPipe's examples/ffmpeg.py: sync(memoryview(buffer.mglo)), then
    # pipe(memoryview(buffer.mglo), fd). moderngl maps a buffer once, so a view held past
    # pipe() would make the next memoryview() raise "Cannot map buffer".
    moderngl = pytest.importorskip("moderngl")
    from framebus import turbopipe

    monkeypatch.setenv("DISPLAY", xvfb.display)
    ctx = moderngl.create_standalone_context()
    sent = [pattern(1 << 20, i).tobytes() for i in range(4)]
    buf = ctx.buffer(reserve=len(sent[0]))
    r = Reader(delay=0.1)
    for data in sent:
        turbopipe.sync(memoryview(buf.mglo))
        buf.write(data)
        turbopipe.pipe(memoryview(buf.mglo), r.fd)
    turbopipe.sync(memoryview(buf.mglo))
    assert r.finish() == sha(*sent)
    buf.release()
    ctx.release()


def test_exit_with_pending_writes_neither_hangs_nor_crashes():
    code = (
        "import subprocess, sys, numpy as np\n"
        "from framebus import _framebus as fb\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'],"
        " stdin=subprocess.PIPE)\n"
        "for _ in range(3):\n"
        "    fb.pipe(np.ones(8 << 20, np.uint8), p.stdin.fileno())\n"
        "vw = fb.VideoWriter(sys.argv[1], 64, 48, 10, codec='ffv1')\n"
        "vw.write(np.zeros((48, 64, 4), np.uint8))\n"
        "p.kill()\n"
        "print('bye', flush=True)\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run(
            [sys.executable, "-c", code, os.path.join(d, "v.mkv")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "bye"
        assert os.path.getsize(os.path.join(d, "v.mkv")) > 0  # the writer finished the file at exit


def _pipe_threads() -> set[str]:
    names = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                names.add(f.read().strip())
        except OSError:  # the thread exited meanwhile
            pass
    return {n for n in names if n.startswith("fbpipe-")}


def test_one_thread_per_fd_and_close_joins_it():
    readers = [Reader() for _ in range(2)]
    for r in readers:
        fb.pipe(b"x" * 1000, r.fd)
    fb.sync()  # the workers ran (a thread names itself once it starts)
    names = {f"fbpipe-{r.fd}" for r in readers}
    assert names <= _pipe_threads()
    for r in readers:
        r.finish()  # framebus.close(fd) joins the thread
    assert not (names & _pipe_threads())
