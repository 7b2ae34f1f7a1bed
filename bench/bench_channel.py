"""Frames between processes: framebus channel vs multiprocessing.Queue, a shared_memory
ring + Queue of indices, and iceoryx2, in one run, at 1080p and 4K BGRA.

A producer process writes each frame (np.copyto from a source frame into the transport's
buffer: a fresh array for mp.Queue, the ring slot, the loaned iceoryx2 sample, or the
framebus frame from `pub.acquire`), then hands it off; a consumer process receives it and
reads every byte (uint64-view sum). Back-pressure everywhere: Queue(maxsize=2), a 4-slot
ring, iceoryx2 buffer 2 with RetryUntilDelivered, framebus lossless depth=2 on_full=block.

Timestamps (CLOCK_MONOTONIC, shared by the processes): t0 before the write, t_pub the
last thing before the hand-off call (pub.send, Queue.put, sample.send), t_avail when the
consumer has the frame, t_done after the read. t_pub goes into a local variable; the
producer files (seq, t0, t_pub) after the hand-off call, in a preallocated int64 array
(sent back at the end, joined by the sequence number that travels in the frame), so no
transport pays for writing stamps between t_pub and its hand-off call. (A list of tuples
kept every stamp alive: pymalloc then took a fresh page every ~64 frames, and that page
fault — 20–40 µs here — fell between t_pub and the hand-off call.)
handoff = t_avail - t_pub (send→receive: the transport alone), e2e = t_done - t0.
Modes: max = unpaced producer (frames/s; latency then includes queueing behind the read);
paced = --rate fps (latency of the hand-off itself).
The framebus and iceoryx2 consumers differ in how they wait: framebus blocks in recv()
(eventfd + poll, GIL released, no CPU while idle); iceoryx2's Python consumer busy-polls
receive() (as in ipc_py.py), keeping a core. "framebus_spin" is framebus with
Subscriber(spin=1.0): recv busy-waits before sleeping, the same trade as iceoryx2's.
"framebus_auto" is Subscriber(spin="auto"): it sleeps until 2 ms before the next frame
is due (learnt from the publisher's send times) and spins only then. "framebus_poll"
busy-polls sub.try_recv() in a Python loop, exactly like the iceoryx2 consumer.

The mp.Queue, shared_memory and iceoryx2 transports are copied from
the anchor IPC script of the shared benchmark set (not in this repository) with the frame size made a
parameter, so that framebus is measured beside them in the same run; the copy is the
anchor code itself, not framebus code.

Usage: python bench/bench_channel.py [--sizes 1080p,4K] [--transports ...] [--modes max,paced]
                                     [--frames 300] [--rate 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

# NumPy's OpenBLAS starts one spinning thread per core (seen with perf: 15 % of the
# producer's samples in blas_thread_server) and none of the cases uses BLAS. On a
# 2-core machine that steals CPU from every transport; children inherit this.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

SIZES = {"1080p": (1920, 1080), "4K": (3840, 2160)}
SLOTS = 4
TRANSPORTS = [
    "framebus",
    "framebus_auto",
    "framebus_spin",
    "framebus_poll",
    "mpqueue",
    "shm_ring",
    "iceoryx2",
]


def make_src(w, h):
    return np.random.default_rng(0).integers(0, 256, (h, w, 4), dtype=np.uint8)


def read_all(frame):
    return frame.reshape(-1).view(np.uint64).sum()


class Stamps:
    """(seq, t0, t_pub) rows of a producer, preallocated (see the module doc)."""

    def __init__(self, n):
        self.rows = np.zeros((n, 3), np.int64)

    def put(self, i, t0, t_pub):
        self.rows[i] = (i, t0, t_pub)

    def tolist(self):
        return [tuple(r) for r in self.rows.tolist()]


def pace(i, start, rate):
    if rate:
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


# ---------------- framebus ----------------
def fb_producer(name, w, h, ready, n, rate, pres):
    from framebus._framebus import Publisher

    src = make_src(w, h)
    stamps = Stamps(n)
    with Publisher(name, mode="lossless", depth=2, on_full="block") as pub:
        ready.set()
        pub.wait_for_subscribers(1, timeout=30)
        start = time.monotonic()
        for i in range(n):
            pace(i, start, rate)
            frame = pub.acquire(w, h, "BGRA")
            dst = np.asarray(frame)
            t0 = time.monotonic_ns()
            np.copyto(dst, src)
            dst.reshape(-1)[:8].view(np.int64)[0] = i
            del dst
            t_pub = time.monotonic_ns()
            pub.send(frame)
            stamps.put(i, t0, t_pub)
            del frame
    pres.put(stamps.tolist())


def polled(sub):
    """Busy-poll try_recv in Python, as the iceoryx2 consumer polls receive()."""
    from framebus import ChannelClosed

    try:
        while True:
            f = sub.try_recv()
            if f is not None:
                yield f
    except ChannelClosed:
        return


def fb_consumer(name, ready, res, spin=0.0):
    from framebus._framebus import Subscriber

    ready.wait(30)
    sub = Subscriber(name, timeout=30, spin=0.0 if spin == "poll" else spin)
    out = []
    frames = polled(sub) if spin == "poll" else sub
    for f in frames:  # ends with ChannelClosed when the producer closes
        t1 = time.monotonic_ns()
        a = np.asarray(f)
        seq = int(a.reshape(-1)[:8].view(np.int64)[0])
        read_all(a)
        out.append((seq, t1, time.monotonic_ns()))
        del a, f
    res.put(out)


# ---------------- multiprocessing.Queue (copied from ipc_py.py) ----------------
def mpq_producer(q, w, h, ready, n, rate, pres):
    src = make_src(w, h)
    stamps = Stamps(n)
    ready.wait()
    start = time.monotonic()
    for i in range(n):
        pace(i, start, rate)
        t0 = time.monotonic_ns()
        frame = np.empty_like(src)
        np.copyto(frame, src)
        t_pub = time.monotonic_ns()
        q.put((i, frame))
        stamps.put(i, t0, t_pub)
    q.put(None)
    pres.put(stamps.tolist())


def mpq_consumer(q, ready, res):
    ready.set()
    out = []
    while (item := q.get()) is not None:
        seq, frame = item
        t1 = time.monotonic_ns()
        read_all(frame)
        out.append((seq, t1, time.monotonic_ns()))
    res.put(out)


# ---------------- shared_memory ring + Queues of indices (copied from ipc_py.py) ----------------
def shm_producer(name, w, h, free_q, full_q, ready, n, rate, pres):
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=name)
    ring = np.ndarray((SLOTS, h, w, 4), np.uint8, buffer=shm.buf)
    src = make_src(w, h)
    stamps = Stamps(n)
    ready.wait()
    start = time.monotonic()
    for i in range(n):
        pace(i, start, rate)
        idx = free_q.get()
        t0 = time.monotonic_ns()
        np.copyto(ring[idx], src)
        t_pub = time.monotonic_ns()
        full_q.put((idx, i))
        stamps.put(i, t0, t_pub)
    full_q.put(None)
    pres.put(stamps.tolist())
    del ring
    shm.close()


def shm_consumer(name, w, h, free_q, full_q, ready, res):
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=name)
    ring = np.ndarray((SLOTS, h, w, 4), np.uint8, buffer=shm.buf)
    for k in range(SLOTS):
        free_q.put(k)
    ready.set()
    out = []
    while (item := full_q.get()) is not None:
        idx, seq = item
        t1 = time.monotonic_ns()
        read_all(ring[idx])
        out.append((seq, t1, time.monotonic_ns()))
        free_q.put(idx)
    res.put(out)
    del ring
    shm.close()


# ---------------- iceoryx2 (copied from ipc_py.py) ----------------
def iox_service(service_name):
    import iceoryx2 as iox2

    iox2.set_log_level_from_env_or(iox2.LogLevel.Error)
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    svc = (
        node.service_builder(iox2.ServiceName.new(service_name))
        .publish_subscribe(iox2.Slice[ctypes.c_uint8])
        .enable_safe_overflow(False)
        .subscriber_max_buffer_size(2)
        .history_size(0)
        .open_or_create()
    )
    return iox2, node, svc


def iox_producer(service_name, w, h, ready, n, rate, pres):
    iox2, node, svc = iox_service(service_name)
    nbytes = w * h * 4
    pub = (
        svc.publisher_builder()
        .initial_max_slice_len(nbytes)
        .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
        .create()
    )
    src = make_src(w, h).reshape(-1)
    stamps = Stamps(n)
    ready.wait()
    start = time.monotonic()
    for i in range(n):
        pace(i, start, rate)
        sample = pub.loan_slice_uninit(nbytes)
        dst = np.frombuffer(sample.payload().as_memory_view(), np.uint8)
        t0 = time.monotonic_ns()
        np.copyto(dst, src)
        dst[:8].view(np.int64)[0] = i
        del dst
        ready_sample = sample.assume_init()
        t_pub = time.monotonic_ns()
        ready_sample.send()
        stamps.put(i, t0, t_pub)
    time.sleep(0.05)
    sample = pub.loan_slice_uninit(1)  # end marker
    sample.assume_init().send()
    pres.put(stamps.tolist())
    time.sleep(0.5)


def iox_consumer(service_name, nbytes, ready, res):
    iox2, node, svc = iox_service(service_name)
    sub = svc.subscriber_builder().create()
    ready.set()
    out = []
    while True:
        sample = sub.receive()
        if sample is None:
            continue  # busy poll
        t1 = time.monotonic_ns()
        mv = sample.payload().as_memory_view()
        if len(mv) < nbytes:
            break
        frame = np.frombuffer(mv, np.uint8)
        seq = int(frame[:8].view(np.int64)[0])
        read_all(frame)
        out.append((seq, t1, time.monotonic_ns()))
        del frame, mv, sample
    res.put(out)


def run_once(transport, w, h, n, rate):
    ctx = mp.get_context("spawn")
    ready, res, pres = ctx.Event(), ctx.Queue(), ctx.Queue()
    shm = None
    tag = f"bench-{os.getpid()}-{time.monotonic_ns()}"
    if transport.startswith("framebus"):
        # framebus sleeps in poll() at once; framebus_spin busy-waits (up to 1 s)
        # before sleeping, like the iceoryx2 consumer's busy poll; framebus_auto
        # naps until 2 ms before the next frame is due, then spins (spin="auto").
        # framebus_poll busy-polls try_recv() in a Python loop (the iceoryx2 way).
        spin = {
            "framebus": 0.0,
            "framebus_spin": 1.0,
            "framebus_auto": "auto",
            "framebus_poll": "poll",
        }[transport]
        prod = ctx.Process(target=fb_producer, args=(tag, w, h, ready, n, rate, pres))
        cons = ctx.Process(target=fb_consumer, args=(tag, ready, res, spin))
    elif transport == "mpqueue":
        q = ctx.Queue(maxsize=2)
        prod = ctx.Process(target=mpq_producer, args=(q, w, h, ready, n, rate, pres))
        cons = ctx.Process(target=mpq_consumer, args=(q, ready, res))
    elif transport == "shm_ring":
        from multiprocessing import shared_memory

        shm = shared_memory.SharedMemory(create=True, size=SLOTS * w * h * 4)
        free_q, full_q = ctx.Queue(), ctx.Queue()
        prod = ctx.Process(
            target=shm_producer, args=(shm.name, w, h, free_q, full_q, ready, n, rate, pres)
        )
        cons = ctx.Process(target=shm_consumer, args=(shm.name, w, h, free_q, full_q, ready, res))
    elif transport == "iceoryx2":
        name = f"bench/channel/{tag}"
        cons = ctx.Process(target=iox_consumer, args=(name, w * h * 4, ready, res))
        prod = ctx.Process(target=iox_producer, args=(name, w, h, ready, n, rate, pres))
    else:
        raise ValueError(transport)
    cons.start()
    prod.start()
    out = res.get(timeout=600)
    sent = {seq: (t0, tp) for seq, t0, tp in pres.get(timeout=60)}
    prod.join()
    cons.join()
    if shm is not None:
        shm.close()
        shm.unlink()
    if len(out) != n or [o[0] for o in out] != list(range(n)):
        raise RuntimeError(f"{transport}: got {len(out)} frames, expected {n} in order")
    out = out[min(10, n // 10) :]  # drop start-up frames
    fps = (len(out) - 1) / ((out[-1][2] - out[0][2]) / 1e9)
    handoff = [(t1 - sent[seq][1]) / 1e3 for seq, t1, t2 in out]  # µs
    e2e = [(t2 - sent[seq][0]) / 1e3 for seq, t1, t2 in out]
    return fps, handoff, e2e


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1080p,4K")
    ap.add_argument("--transports", default=",".join(TRANSPORTS))
    ap.add_argument("--modes", default="max,paced")
    ap.add_argument("--frames", type=int, default=300, help="frames per max-mode run at 1080p")
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--paced-seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    rows, summary = [], {}
    for size in a.sizes.split(","):
        w, h = SIZES[size]
        for mode in a.modes.split(","):
            rate = a.rate if mode == "paced" else 0
            if mode == "max":
                n = a.frames if size == "1080p" else max(60, a.frames // 3)
            else:
                n = max(60, int(a.rate * a.paced_seconds))
            runs = {t: [] for t in a.transports.split(",")}
            # alternate transports within each repeat so noise hits all alike
            for _ in range(a.repeats):
                for t in runs:
                    try:
                        runs[t].append(run_once(t, w, h, n, rate))
                    except Exception as e:  # noqa: BLE001 - reported in the table
                        print(f"{t} {size} {mode}: {e!r}", file=sys.stderr)
            for t, rs in runs.items():
                if not rs:
                    rows.append([size, mode, t, "error", "", "", "", ""])
                    continue

                def med(f, p, rs=rs):
                    return statistics.median(pct(r[f], p) for r in rs)

                fps = statistics.median(r[0] for r in rs)
                row = [
                    size,
                    mode,
                    t,
                    fps,
                    med(1, 50),
                    med(1, 99),
                    med(2, 50) / 1e3,
                    med(2, 99) / 1e3,
                ]
                rows.append(row)
                summary[(size, mode, t)] = row
    notes = []
    for size in a.sizes.split(","):
        paced = {t: summary.get((size, "paced", t)) for t in TRANSPORTS}
        shm = paced.get("shm_ring")
        for t in ("framebus", "framebus_auto", "framebus_spin", "framebus_poll", "iceoryx2"):
            r = paced.get(t)
            if r and shm:
                notes.append(
                    f"{size} paced hand-off p99: {t} {r[5]:.0f} µs, "
                    f"{shm[5] / r[5]:.1f}x lower than shared_memory+Queue ({shm[5]:.0f} µs)"
                )
        iox = summary.get((size, "max", "iceoryx2"))
        for t in ("framebus", "framebus_auto", "framebus_spin", "framebus_poll"):
            r = summary.get((size, "max", t))
            if r and iox:
                notes.append(
                    f"{size} max frames/s: {t} {r[3]:.0f} vs iceoryx2 {iox[3]:.0f} "
                    f"({r[3] / iox[3]:.2f}x)"
                )
    harness.report(
        "bench_channel",
        "Frames between processes (producer writes, consumer reads every byte)",
        [
            "size",
            "mode",
            "transport",
            "frames/s",
            "hand-off p50 µs",
            "hand-off p99 µs",
            "e2e p50 ms",
            "e2e p99 ms",
        ],
        rows,
        notes="Medians over repeats.\n\n" + "\n".join(f"- {n}" for n in notes),
    )


if __name__ == "__main__":
    main()
