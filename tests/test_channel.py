"""End-to-end tests of framebus.Publisher / framebus.Subscriber across threads and processes.

Children are started with both the "spawn" and the "fork" contexts; kill -9 is real
SIGKILL. Every channel name is unique per test run so these tests can run in parallel
with other suites.
"""

import gc
import itertools
import multiprocessing as mp
import os
import signal
import threading
import time

import framebus
import numpy as np
import pytest
from framebus._framebus import ChannelFull, Publisher, Subscriber
from signals import alarm

_counter = itertools.count()


def unique(tag):
    return f"pytest-{tag}-{os.getpid()}-{next(_counter)}"


def pattern(k, shape):
    """Deterministic pixels for frame k (differs per frame and per byte)."""
    n = int(np.prod(shape))
    return ((np.arange(n, dtype=np.uint64) * 7 + k * 31) % 251).astype(np.uint8).reshape(shape)


def send_pattern(pub, k, w=64, h=48, fmt="BGRA"):
    f = pub.acquire(w, h, fmt)
    a = np.asarray(f)
    a[...] = pattern(k, a.shape)
    del a
    return pub.send(f)


def wait_until(pred, timeout=2.0):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.002)
    return True


def fd_count():
    """Open fds of the kinds a channel uses: memfds, sockets, eventfds. (Pipes are left
    out: multiprocessing keeps one to its resource tracker, started on first use.)"""
    kinds = ("/memfd:", "socket:", "anon_inode:[eventfd]")
    return sum(1 for t in fd_list() if t.startswith(kinds))


def fd_list():
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the fd listdir itself used
            pass
    return sorted(out)


def shm_entries():
    """/dev/shm entries, minus multiprocessing's own semaphores (sem.mp-*, made by the
    Queue/Event objects the tests use to talk to children, not by framebus)."""
    return {e for e in os.listdir("/dev/shm") if not e.startswith("sem.mp-")}


def rss_kib(pid="self"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# ---------------------------------------------------------------- child processes
# Top-level so that the "spawn" context can import them.


def child_reader(name, n, shape_seq, result):
    """Receive n lossless frames, check order and every pixel, report (ok, detail)."""
    try:
        sub = Subscriber(name, timeout=10.0)
        for k in range(n):
            f = sub.recv(timeout=10.0)
            w, h, fmt = shape_seq[k % len(shape_seq)]
            a = np.asarray(f)
            if f.seq != k + 1 or (f.width, f.height, f.format) != (w, h, fmt):
                result.put((False, f"frame {k}: got seq {f.seq} {f.width}x{f.height} {f.format}"))
                return
            if not np.array_equal(a, pattern(k, a.shape)):
                result.put((False, f"frame {k}: pixels differ"))
                return
            del a, f
        result.put((True, sub.received))
    except Exception as e:  # reported to the parent, which fails the test
        result.put((False, repr(e)))


def child_holder(name, held_event):
    """Take 3 frames, keep them (with NumPy views), signal, and wait to be killed."""
    sub = Subscriber(name, timeout=10.0)
    frames = [sub.recv(timeout=10.0) for _ in range(3)]
    arrays = [np.asarray(f) for f in frames]
    assert all(a.flags.writeable is False for a in arrays)
    held_event.set()
    time.sleep(60)


def child_publisher(name, sent_event):
    """Publish one frame, signal, and wait to be killed."""
    pub = Publisher(name, mode="latest")
    pub.wait_for_subscribers(1, timeout=10.0)
    send_pattern(pub, 5)
    sent_event.set()
    time.sleep(60)


# ---------------------------------------------------------------- in-process semantics


def test_latest_delivers_newest_pixel_exact_and_counts_skips():
    name = unique("latest")
    with Publisher(name, mode="latest") as pub, Subscriber(name, timeout=1.0) as sub:
        assert pub.subscribers == 1 and pub.mode == "latest" and sub.mode == "latest"
        for k in range(10):
            send_pattern(pub, k)
        f = sub.recv(timeout=1.0)
        a = np.asarray(f)
        assert np.array_equal(a, pattern(9, a.shape))
        assert sub.skipped == 9
        assert pub.stats()["replaced"] == 9
        with pytest.raises(TimeoutError):
            sub.recv(timeout=0.02)
        send_pattern(pub, 10)
        g = sub.recv(timeout=1.0)
        assert np.array_equal(np.asarray(g), pattern(10, a.shape))
        assert sub.skipped == 9 and sub.received == 2


def test_received_frames_are_read_only_and_pinned_by_every_export():
    name = unique("pin")
    with Publisher(name) as pub, Subscriber(name, timeout=1.0) as sub:
        f = pub.acquire(32, 16, "GRAY8")
        slot = f.slot_id
        np.asarray(f)[...] = 200
        pub.send(f)
        f.release()
        r = sub.recv(timeout=1.0)
        assert r.readonly
        a = np.asarray(r)
        with pytest.raises(ValueError):
            a[0, 0] = 1
        with pytest.raises(TypeError):
            memoryview(r)[0] = 1
        assert int(a.sum()) == 200 * 32 * 16
        # the frame object is released, the NumPy view still pins the slot
        r.release()
        time.sleep(0.02)
        assert pub.stats()["pins"] == 1
        assert pub.pool.stats()["slots_in_use"] == 1
        other = pub.acquire(32, 16, "GRAY8")
        assert other.slot_id != slot, "a pinned slot must not be handed out"
        other.release()
        del a
        gc.collect()
        assert wait_until(lambda: pub.stats()["pins"] == 0)
        again = pub.acquire(32, 16, "GRAY8")
        assert again.slot_id in (slot, other.slot_id)
        assert sub.held == 0


def test_lossless_order_sizes_and_formats_threads():
    name = unique("lossless")
    shapes = [(64, 36, "BGRA"), (30, 20, "RGB"), (16, 8, "NV12"), (50, 10, "GRAY16")]
    n = 200
    with Publisher(name, mode="lossless", depth=3, timeout=10.0) as pub:
        sub = Subscriber(name, timeout=1.0)
        errors = []

        def reader():
            for k in range(n):
                f = sub.recv(timeout=10.0)
                w, h, fmt = shapes[k % len(shapes)]
                a = np.asarray(f)
                if (f.width, f.height, f.format) != (w, h, fmt) or not np.array_equal(
                    a.view(np.uint8), pattern(k, a.view(np.uint8).shape)
                ):
                    errors.append(k)

        t = threading.Thread(target=reader)
        t.start()
        for k in range(n):
            w, h, fmt = shapes[k % len(shapes)]
            f = pub.acquire(w, h, fmt)
            a = np.asarray(f).view(np.uint8)
            a[...] = pattern(k, a.shape)
            assert pub.send(f) == k + 1  # channel sequence numbers are consecutive
        t.join()
        assert errors == []
        assert sub.skipped == 0 and sub.received == n
        sub.close()


def test_lossless_full_raises_or_blocks_with_timeout():
    name = unique("full")
    with Publisher(name, mode="lossless", depth=2, on_full="raise") as pub:
        sub = Subscriber(name, timeout=1.0)
        send_pattern(pub, 0)
        send_pattern(pub, 1)
        with pytest.raises(ChannelFull, match="depth=2"):
            send_pattern(pub, 2)
        assert isinstance(ChannelFull("x"), framebus.FramebusError)
        sub.recv(timeout=1.0)
        send_pattern(pub, 2)
    name = unique("block")
    with Publisher(name, mode="lossless", depth=1, on_full="block", timeout=0.05) as pub:
        sub = Subscriber(name, timeout=1.0)
        send_pattern(pub, 0)
        t0 = time.monotonic()
        with pytest.raises(ChannelFull, match="waited"):
            send_pattern(pub, 1)
        assert time.monotonic() - t0 >= 0.05


def test_bad_arguments_raise_clear_errors():
    for bad in ["", "a/b", "x" * 65, ".dot", "sp ace"]:
        with pytest.raises(ValueError, match="invalid channel name"):
            Publisher(bad)
    with pytest.raises(ValueError, match='invalid mode="fast"'):
        Publisher(unique("m"), mode="fast")
    with pytest.raises(ValueError, match="depth=3 only applies"):
        Publisher(unique("m"), mode="latest", depth=3)
    with pytest.raises(ValueError, match="invalid depth=0"):
        Publisher(unique("m"), mode="lossless", depth=0)
    with pytest.raises(ValueError, match='invalid on_full="drop"'):
        Publisher(unique("m"), mode="lossless", on_full="drop")
    name = unique("taken")
    with pytest.raises(FileNotFoundError, match=name):
        Subscriber(name)
    with Publisher(name) as pub:
        with pytest.raises(FileExistsError, match=name):
            Publisher(name)
        with pytest.raises(ValueError, match="timeout"):
            Subscriber(name, timeout=-1)
        with pytest.raises(ValueError, match='invalid spin="fast"'):
            Subscriber(name, spin="fast")
        with pytest.raises(ValueError, match="invalid spin=-1"):
            Subscriber(name, spin=-1)
        sub = Subscriber(name)
        with pytest.raises(ValueError, match="timeout"):
            sub.recv(timeout=float("nan"))
        with pytest.raises(ValueError, match="width"):
            pub.acquire(0, 10)


def test_auto_spin_paces_itself_by_the_senders_cadence():
    name = unique("auto")
    period, n = 0.02, 20
    pub = Publisher(name, mode="lossless", depth=4)
    sub = Subscriber(name, timeout=1.0, spin="auto")
    assert sub.send_period is None

    def sender():
        start = time.monotonic()
        for k in range(n):
            time.sleep(max(0.0, start + (k + 1) * period - time.monotonic()))
            send_pattern(pub, k, 16, 4, "GRAY8")

    t = threading.Thread(target=sender)
    cpu0, wall0 = time.thread_time(), time.monotonic()
    t.start()
    for k in range(n):
        f = sub.recv(timeout=1.0)
        np.testing.assert_array_equal(np.asarray(f), pattern(k, (4, 16)))
        del f
    cpu, wall = time.thread_time() - cpu0, time.monotonic() - wall0
    t.join()
    pub.close()
    assert period * 0.9 <= sub.send_period < period * 2
    # spinning only around each frame: far from a full spin (cpu ≈ wall)
    assert cpu < wall / 2, (cpu, wall)


def child_paced_publisher(name, n, period):
    with Publisher(name, mode="lossless", depth=4) as pub:
        pub.wait_for_subscribers(1, timeout=10)
        start = time.monotonic()
        for k in range(n):
            time.sleep(max(0.0, start + (k + 1) * period - time.monotonic()))
            send_pattern(pub, k, 16, 4, "GRAY8")


def test_auto_spin_holding_the_gil_naps_between_frames_of_another_process():
    """spin="auto" with no other Python thread: naps (GIL released) until the next
    frame is due, then spins with the GIL held; frames pixel-exact, CPU far below a
    full spin."""
    name = unique("auto-gil")
    period, n = 0.02, 25
    child = mp.get_context("spawn").Process(target=child_paced_publisher, args=(name, n, period))
    child.start()
    try:
        sub = Subscriber(name, timeout=10.0, spin="auto")
        assert threading.active_count() == 1  # so the spin holds the GIL
        cpu0, wall0 = time.thread_time(), time.monotonic()
        for k in range(n):
            f = sub.recv(timeout=2.0)
            np.testing.assert_array_equal(np.asarray(f), pattern(k, (4, 16)))
            del f
        cpu, wall = time.thread_time() - cpu0, time.monotonic() - wall0
        assert period * 0.9 <= sub.send_period < period * 2
        assert cpu < wall / 2, (cpu, wall)
        with pytest.raises(framebus.ChannelClosed):
            sub.recv(timeout=5.0)
    finally:
        child.join(10)
    assert child.exitcode == 0


@pytest.mark.parametrize("other_thread", [False, True], ids=["gil-held", "gil-released"])
def test_spin_budget_is_per_call_and_a_frame_sent_meanwhile_is_taken(other_thread):
    """spin=s busy-waits s seconds per recv in total, then sleeps; frames that come
    while it spins are taken pixel-exact. Alone, the spin holds the GIL (it hands
    it over and runs signal handlers every ms: the handler here is what sends);
    with another Python thread alive it spins with the GIL released."""
    name = unique("spinbudget")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait) if other_thread else None
    if other:
        other.start()
    assert threading.active_count() == (2 if other_thread else 1)
    try:
        with Publisher(name) as pub, Subscriber(name, timeout=1.0, spin=0.25) as sub:
            cpu0, wall0 = time.thread_time(), time.monotonic()
            with pytest.raises(TimeoutError):
                sub.recv(timeout=1.0)
            cpu, wall = time.thread_time() - cpu0, time.monotonic() - wall0
            assert wall >= 0.95, wall
            # 0.25 s of spinning, not the whole second (each 100 ms slice used to
            # start a fresh spin)
            assert cpu < 0.6, (cpu, wall)

            with alarm(lambda: send_pattern(pub, 7), 0.05):
                f = sub.recv(timeout=5.0)
            np.testing.assert_array_equal(np.asarray(f), pattern(7, (48, 64, 4)))
            del f
    finally:
        stop.set()
        if other:
            other.join()


def test_ctrl_c_interrupts_a_spinning_recv():
    name = unique("sigint-spin")
    assert threading.active_count() == 1  # so the spin holds the GIL

    def interrupt():
        raise KeyboardInterrupt

    with Publisher(name) as _pub, Subscriber(name, timeout=1.0, spin=30.0) as sub:
        t0 = time.monotonic()
        with alarm(interrupt, 0.1), pytest.raises(KeyboardInterrupt):
            sub.recv()
        assert time.monotonic() - t0 < 2.0
        # a handler that closes the subscriber ends the spin at once, too
        t0 = time.monotonic()
        with alarm(sub.close, 0.1), pytest.raises(framebus.ChannelClosed):
            sub.recv()
        assert time.monotonic() - t0 < 2.0


def test_close_delivers_pending_then_channel_closed_and_iteration_ends():
    name = unique("close")
    pub = Publisher(name, mode="lossless", depth=8)
    sub = Subscriber(name, timeout=1.0)
    poller = Subscriber(name, timeout=1.0)
    assert poller.try_recv() is None
    for k in range(5):
        send_pattern(pub, k, 8, 8, "GRAY8")
    pub.close()
    assert pub.closed
    got = [int(np.asarray(f)[0, 0]) for f in sub]
    assert got == [int(pattern(k, (8, 8))[0, 0]) for k in range(5)]
    with pytest.raises(framebus.ChannelClosed):
        sub.recv(timeout=1.0)
    # a try_recv polling loop drains the queue, then ends with ChannelClosed
    # (bounded, so a try_recv that never says Closed fails instead of hanging)
    polled = []
    deadline = time.monotonic() + 10.0
    with pytest.raises(framebus.ChannelClosed):
        while time.monotonic() < deadline:
            f = poller.try_recv()
            if f is not None:
                polled.append(int(np.asarray(f)[0, 0]))
    assert polled == got
    # the name is free as soon as close() returns
    Publisher(name).close()


def test_rss_and_fds_flat_over_100k_frames():
    name = unique("rss")
    gc.collect()
    fds0 = fd_count()
    pub = Publisher(name, mode="latest")
    sub = Subscriber(name, timeout=1.0)
    rss = []
    for k in range(100_000):
        f = pub.acquire(32, 32, "BGRA")
        pub.send(f)
        del f
        g = sub.recv(timeout=1.0)
        del g
        if k in (10_000, 99_999):
            rss.append(rss_kib())
    assert sub.received == 100_000
    assert rss[1] - rss[0] < 2048, f"RSS grew {rss[1] - rss[0]} KiB over 90 000 frames"
    assert pub.pool.stats()["slots"] <= 3
    sub.close()
    del sub
    pub.close()
    del pub
    gc.collect()
    assert wait_until(lambda: fd_count() == fds0), (fds0, fd_count())


# ---------------------------------------------------------------- processes


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_processes_get_every_pixel_in_order(method):
    ctx = mp.get_context(method)
    name = unique(f"proc-{method}")
    nsubs = 8 if method == "fork" else 2
    shapes = [(96, 54, "BGRA"), (40, 30, "RGB"), (32, 32, "I420")]
    n = 60
    shm_before = shm_entries()
    gc.collect()
    fds0 = fd_count()
    with Publisher(name, mode="lossless", depth=4, timeout=20.0) as pub:
        result = ctx.Queue()
        procs = [
            ctx.Process(target=child_reader, args=(name, n, shapes, result)) for _ in range(nsubs)
        ]
        for p in procs:
            p.start()
        assert pub.wait_for_subscribers(nsubs, timeout=20.0) == nsubs
        for k in range(n):
            w, h, fmt = shapes[k % len(shapes)]
            f = pub.acquire(w, h, fmt)
            a = np.asarray(f)
            a[...] = pattern(k, a.shape)
            del a
            pub.send(f)
        outcomes = [result.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(10)
        assert all(ok for ok, _ in outcomes), outcomes
        assert [d for _, d in outcomes] == [n] * nsubs
        assert wait_until(lambda p=pub: p.subscribers == 0)
        assert pub.stats()["pins"] == 0
        result.close()
        result.join_thread()
    for p in procs:
        p.close()  # multiprocessing's own sentinel fds
    del procs, result, f
    gc.collect()
    assert shm_entries() == shm_before
    assert pub.pool.stats()["slots"] == 0, "close() unmaps the publisher's own pool"
    del pub
    assert wait_until(lambda: fd_count() <= fds0), (fds0, fd_list())


def test_kill_9_subscriber_holding_frames_reclaims_pins():
    ctx = mp.get_context("spawn")
    name = unique("kill-sub")
    shm_before = shm_entries()
    with Publisher(name, mode="lossless", depth=4) as pub:
        held = ctx.Event()
        child = ctx.Process(target=child_holder, args=(name, held))
        child.start()
        pub.wait_for_subscribers(1, timeout=20.0)
        ids = []
        for _ in range(3):
            f = pub.acquire(64, 64, "BGRA")
            ids.append(f.slot_id)
            pub.send(f)
            f.release()
        assert held.wait(20)
        assert pub.stats()["pins"] == 3
        assert pub.pool.stats()["slots_in_use"] == 3
        os.kill(child.pid, signal.SIGKILL)
        child.join(5)
        t0 = time.monotonic()
        # Reclaiming is both: the pins go under the publisher's lock, the slot leases
        # are dropped just after it (as the Rust twin of this test waits for).
        assert wait_until(
            lambda: pub.stats()["pins"] == 0 and pub.pool.stats()["slots_in_use"] == 0,
            timeout=2.0,
        )
        assert time.monotonic() - t0 < 1.0
        assert pub.stats()["disconnected"] == 1 and pub.subscribers == 0
        again = pub.acquire(64, 64, "BGRA")
        assert again.slot_id in ids, "a reclaimed slot is reused"
    assert shm_entries() == shm_before


def test_kill_9_publisher_raises_channel_closed_and_name_is_reusable():
    ctx = mp.get_context("spawn")
    name = unique("kill-pub")
    shm_before = shm_entries()
    sent = ctx.Event()
    child = ctx.Process(target=child_publisher, args=(name, sent))
    child.start()
    sub = Subscriber(name, timeout=20.0)
    poller = Subscriber(name, timeout=20.0, spin="auto")
    assert sent.wait(20)
    f = sub.recv(timeout=5.0)
    os.kill(child.pid, signal.SIGKILL)
    child.join(5)
    t0 = time.monotonic()
    with pytest.raises(framebus.ChannelClosed):
        sub.recv(timeout=10.0)
    assert time.monotonic() - t0 < 1.0
    # a try_recv polling loop learns it too (it reads the socket every 1 ms)
    t0 = time.monotonic()
    with pytest.raises(framebus.ChannelClosed):
        while time.monotonic() - t0 < 10.0:
            poller.try_recv()
    assert time.monotonic() - t0 < 1.0
    # the frame received before the crash is still intact
    a = np.asarray(f)
    assert np.array_equal(a, pattern(5, a.shape))
    del a, f
    sub.close()
    # a new publisher takes the name
    with Publisher(name) as pub, Subscriber(name, timeout=1.0) as sub2:
        send_pattern(pub, 6)
        g = sub2.recv(timeout=1.0)
        assert np.array_equal(np.asarray(g), pattern(6, (48, 64, 4)))
    assert shm_entries() == shm_before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_other_users_are_refused_both_ways():
    """Abstract sockets have no permissions: each end checks the other's uid."""
    import socket

    uid = os.getuid()
    name, squatted = unique("uid"), unique("squat")
    r, w = os.pipe()
    with Publisher(name) as pub:
        pid = os.fork()
        if pid == 0:  # child: become nobody
            code = 1
            try:
                os.close(r)
                os.setuid(65534)
                # 1. connect straight to the publisher's address: it hangs up, no hello
                s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                s.connect(f"\0framebus/{uid}/{name}")
                s.settimeout(5)
                hung_up = s.recv(64) == b""
                # 2. squat a name in the parent's namespace
                sq = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                sq.bind(f"\0framebus/{uid}/{squatted}")
                sq.listen(4)
                os.write(w, b"1" if hung_up else b"0")
                time.sleep(3)
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        assert os.read(r, 1) == b"1", "the publisher must hang up on another user"
        assert pub.subscribers == 0
        with pytest.raises(PermissionError, match="uid 65534"):
            Subscriber(squatted, timeout=1.0)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)


def test_forked_copies_are_inert():
    """A fork()ed child that drops its copies must not close the parent's channel,
    release the parent's frames or unsubscribe the parent."""
    name = unique("fork-inert")
    with Publisher(name, mode="latest") as pub:
        sub = Subscriber(name, timeout=1.0)
        send_pattern(pub, 1)
        held = sub.recv(timeout=1.0)
        assert pub.stats()["pins"] == 1
        pid = os.fork()
        if pid == 0:
            try:
                held.release()
                sub.close()
                pub.close()
                del held, sub, pub
                gc.collect()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.05)
        assert pub.subscribers == 1 and not pub.closed
        assert pub.stats()["pins"] == 1, "the child must not release the parent's frame"
        a = np.asarray(held)
        assert np.array_equal(a, pattern(1, a.shape))
        send_pattern(pub, 2)
        g = sub.recv(timeout=1.0)
        assert np.array_equal(np.asarray(g), pattern(2, a.shape))


def test_ctrl_c_interrupts_a_blocked_recv():
    name = unique("sigint")
    with Publisher(name) as pub, Subscriber(name, timeout=1.0) as sub:
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            sub.recv()  # no timeout: only the signal can end it
        assert time.monotonic() - t0 < 2.0
        timer.join()
        # the subscriber still works afterwards
        send_pattern(pub, 3)
        f = sub.recv(timeout=1.0)
        assert np.array_equal(np.asarray(f), pattern(3, (48, 64, 4)))
    # and a sender blocked on a full lossless queue
    name = unique("sigint-send")
    with Publisher(name, mode="lossless", depth=1) as pub, Subscriber(name, timeout=1.0) as sub:
        send_pattern(pub, 0)
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            send_pattern(pub, 1)  # on_full="block", no timeout
        timer.join()
        assert sub.recv(timeout=1.0).seq == 1, "the interrupted frame was not sent"
        with pytest.raises(TimeoutError):
            sub.recv(timeout=0.05)


def test_publisher_uses_a_given_pool_and_leaves_it_open():
    pool = framebus.FramePool(max_slots=2)
    name = unique("pool")
    with Publisher(name, pool=pool) as pub, Subscriber(name, timeout=1.0) as sub:
        f = pub.acquire(32, 32, "RGBA")
        assert pool.stats()["slots_in_use"] == 1, "acquire takes from the given pool"
        np.asarray(f)[...] = 9
        pub.send(f)
        f.release()
        g = sub.recv(timeout=1.0)
        assert int(np.asarray(g).max()) == 9
        assert pool.stats()["slots_in_use"] == 1, "pinned by the subscriber"
        del g
        assert wait_until(lambda: pool.stats()["slots_in_use"] == 0)
    assert not pool.closed, "closing the publisher leaves a pool it did not make open"
    pool.acquire(8, 8).release()
