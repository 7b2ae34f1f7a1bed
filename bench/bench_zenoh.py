"""Frames over Zenoh on loopback TCP: framebus.zenoh vs zenoh-python's own put/subscriber
of the same frames, and the same-host framebus channel, at 1080p and 4K BGRA.

A producer process writes each frame (np.copyto from a source frame: into the acquired
framebus frame, or into a NumPy array that zenoh-python then needs as `bytes`, i.e.
`.tobytes()`) and hands it off (`pub.send(f)` / `pub.put(payload, attachment=...)`);
the consumer (this process) receives it as a NumPy array (framebus: `np.asarray(frame)`,
zero-copy over the pool slot; zenoh-python: `np.frombuffer(sample.payload.to_bytes())`)
and reads every byte (uint64-view sum). Both sides run lossless (congestion control
BLOCK, framebus mode="lossless"), peer to peer over tcp/127.0.0.1 with scouting off.

* max: unpaced producer — frames/s, GB/s, CPU per frame (both processes' user+system
  CPU, all threads, / frames).
* paced (--rate fps): latency p50/p99 from the producer's t0 (before the write, carried
  in the frame's timestamp / the attachment) to the consumer having the array.
* "channel": framebus's local channel (framebus.Publisher/Subscriber, lossless depth 2)
  between the same two processes — the same-host path.

Cases alternate within each repeat (A B C A B C ...); medians of --repeats.

Usage: python bench/bench_zenoh.py [--sizes 1080p,4K] [--frames 200] [--rate 30]
                                   [--repeats 3] [--cases fbzenoh,zenohpy,channel]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

SIZES = {"1080p": (1920, 1080), "4K": (3840, 2160)}
CASES = ["fbzenoh", "zenohpy", "channel"]
QUIET = {"multicast": {"enabled": False}, "gossip": {"enabled": False}}
RESULTS = Path(__file__).resolve().parent / "results" / "current.jsonl"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cfg(port, listen):
    c = {"mode": "peer", "scouting": QUIET}
    if listen:
        c["listen"] = {"endpoints": [f"tcp/127.0.0.1:{port}"]}
    else:
        c["connect"] = {"endpoints": [f"tcp/127.0.0.1:{port}"]}
        c["listen"] = {"endpoints": []}
    return c


def make_src(w, h):
    return np.random.default_rng(0).integers(0, 256, (h, w, 4), dtype=np.uint8)


# ---------------------------------------------------------------- producer (child)
def produce(case, w, h, n, rate, port, key):
    src = make_src(w, h)
    period = 1.0 / rate if rate else 0.0
    if case == "fbzenoh":
        from framebus import zenoh as fz

        pub = fz.Publisher(key, config=cfg(port, False), mode="lossless")
        pub.wait_for_subscribers(1, timeout=30)
        nxt = time.monotonic()
        for _ in range(n):
            f = pub.acquire(w, h, "BGRA")  # timestamp = now (t0)
            np.copyto(np.asarray(f), src)
            pub.send(f)
            del f
            if period:
                nxt += period
                time.sleep(max(0.0, nxt - time.monotonic()))
        time.sleep(0.5)
        pub.close()
    elif case == "zenohpy":
        import zenoh

        s = zenoh.open(zenoh.Config.from_json5(json.dumps(cfg(port, False))))
        pub = s.declare_publisher(key, congestion_control=zenoh.CongestionControl.BLOCK)
        buf = np.empty_like(src)
        while not pub.matching_status.matching:
            time.sleep(0.01)
        nxt = time.monotonic()
        for k in range(n):
            t0 = time.monotonic_ns()
            np.copyto(buf, src)
            pub.put(buf.tobytes(), attachment=f"{t0} {k}".encode())
            if period:
                nxt += period
                time.sleep(max(0.0, nxt - time.monotonic()))
        time.sleep(0.5)
        s.close()
    else:
        import framebus

        pub = framebus.Publisher(key.replace("/", "-"), mode="lossless", depth=2)
        pub.wait_for_subscribers(1, timeout=10)
        nxt = time.monotonic()
        for _ in range(n):
            f = pub.acquire(w, h, "BGRA")
            np.copyto(np.asarray(f), src)
            pub.send(f)
            del f
            if period:
                nxt += period
                time.sleep(max(0.0, nxt - time.monotonic()))
        time.sleep(0.2)
        pub.close()


# ---------------------------------------------------------------- consumer (here)
def consume(case, w, h, n, rate, port, key):
    """Start the producer, receive n frames; returns (seconds, cpu_s, latencies_ns)."""
    lat = []
    argv = [
        sys.executable,
        __file__,
        "--produce",
        case,
        str(w),
        str(h),
        str(n),
        str(rate),
        str(port),
        key,
    ]
    if case == "fbzenoh":
        from framebus import zenoh as fz

        sub = fz.Subscriber(key, config=cfg(port, True))
        child = subprocess.Popen(argv)
        recv = lambda: sub.recv(timeout=30)  # noqa: E731

        def handle(f):
            a = np.asarray(f)
            lat.append(time.monotonic_ns() - f.timestamp)
            a.reshape(-1).view(np.uint64).sum()

        close = sub.close
    elif case == "zenohpy":
        import zenoh

        s = zenoh.open(zenoh.Config.from_json5(json.dumps(cfg(port, True))))
        sub = s.declare_subscriber(key)
        child = subprocess.Popen(argv)
        recv = sub.recv

        def handle(sample):
            a = np.frombuffer(sample.payload.to_bytes(), np.uint8).reshape(h, w, 4)
            lat.append(time.monotonic_ns() - int(sample.attachment.to_bytes().split()[0]))
            a.reshape(-1).view(np.uint64).sum()

        close = s.close
    else:
        import framebus

        child = subprocess.Popen(argv)
        sub = framebus.Subscriber(key.replace("/", "-"), timeout=20)
        recv = lambda: sub.recv(timeout=30)  # noqa: E731

        def handle(f):
            a = np.asarray(f)
            lat.append(time.monotonic_ns() - f.timestamp)
            a.reshape(-1).view(np.uint64).sum()

        close = sub.close
    handle(recv())  # first frame: connection set up; the clock starts after it
    cpu0 = time.process_time()
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    for _ in range(n - 1):
        handle(recv())
    dt = time.perf_counter() - t0
    cpu_here = time.process_time() - cpu0
    child.wait(60)
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    close()
    # The child's whole CPU (incl. its 1.5 s of set-up sleep: none) over its frames.
    cpu_child = (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime)
    return dt, cpu_here, cpu_child, lat[1:]


def run_case(case, size, n, rate):
    w, h = SIZES[size]
    port = free_port()
    key = f"bench/zenoh/{os.getpid()}/{port}"
    dt, cpu_here, cpu_child, lat = consume(case, w, h, n, rate, port, key)
    lat = np.array(lat) / 1e6
    return {
        "fps": (n - 1) / dt,
        "gbps": (n - 1) * w * h * 4 / dt / 1e9,
        # consumer CPU over n-1 frames, producer CPU over n frames (+ set-up)
        "cpu_ms": (cpu_here / (n - 1) + cpu_child / n) * 1e3,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1080p,4K")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--paced-frames", type=int, default=120)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--produce", nargs=7)
    ap.add_argument("--no-save", action="store_true")
    a = ap.parse_args()
    if a.produce:
        case, w, h, n, rate, port, key = a.produce
        produce(case, int(w), int(h), int(n), float(rate), int(port), key)
        return
    cases = a.cases.split(",")
    rows, lines = [], []
    for size in a.sizes.split(","):
        maxr = {c: [] for c in cases}
        paced = {c: [] for c in cases}
        for r in range(a.repeats):
            for c in cases:
                print(f"  {size} repeat {r + 1}/{a.repeats}: {c}", file=sys.stderr, flush=True)
                maxr[c].append(run_case(c, size, a.frames, 0))
                paced[c].append(run_case(c, size, a.paced_frames, a.rate))
        med = {
            c: {
                "fps": harness.median([x["fps"] for x in maxr[c]]),
                "gbps": harness.median([x["gbps"] for x in maxr[c]]),
                "cpu_ms": harness.median([x["cpu_ms"] for x in maxr[c]]),
                "p50": harness.median([x["p50"] for x in paced[c]]),
                "p99": harness.median([x["p99"] for x in paced[c]]),
            }
            for c in cases
        }
        for c in cases:
            m = med[c]
            rows.append([size, c, m["fps"], m["gbps"], m["cpu_ms"], m["p50"], m["p99"]])
        if "fbzenoh" in med and "zenohpy" in med:
            lines.append(
                (
                    "raw, loopback TCP, frames/s",
                    size,
                    med["fbzenoh"]["fps"],
                    "zenoh-python put/subscriber",
                    med["zenohpy"]["fps"],
                    "fps",
                    "higher",
                )
            )
            lines.append(
                (
                    "raw, loopback TCP, CPU per frame",
                    size,
                    med["fbzenoh"]["cpu_ms"],
                    "zenoh-python put/subscriber",
                    med["zenohpy"]["cpu_ms"],
                    "ms",
                    "lower",
                )
            )
        if "fbzenoh" in med and "channel" in med:
            lines.append(
                (
                    "same host: zenoh vs local channel, frames/s",
                    size,
                    med["fbzenoh"]["fps"],
                    "framebus local channel",
                    med["channel"]["fps"],
                    "fps",
                    "higher",
                )
            )
    harness.report(
        "zenoh",
        "Frames over Zenoh (loopback TCP) vs zenoh-python and the local channel",
        [
            "size",
            "case",
            "max frames/s",
            "GB/s",
            "CPU ms/frame (both)",
            f"p50 ms @{a.rate:g}fps",
            f"p99 ms @{a.rate:g}fps",
        ],
        rows,
    )
    if a.no_save:
        return
    info = harness.machine()
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    with RESULTS.open("a") as out:
        for case, res, fv, anchor, av, unit, better in lines:
            ratio = fv / av if better == "higher" else av / fv
            out.write(
                json.dumps(
                    {
                        "feature": "zenoh",
                        "case": case,
                        "res": res,
                        "framebus": "framebus.zenoh",
                        "framebus_value": round(fv, 3),
                        "anchor": anchor,
                        "anchor_value": round(av, 3),
                        "unit": unit,
                        "better": better,
                        "ratio": round(ratio, 2),
                        "date": info["date"],
                        "time": time.strftime("%H:%M UTC", time.gmtime()),
                        "command": cmd,
                        "source": "docs/benchmarks.md: Zenoh (#15)",
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )


if __name__ == "__main__":
    main()
