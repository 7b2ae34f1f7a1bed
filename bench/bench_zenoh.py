"""Frames over Zenoh on loopback TCP: framebus.zenoh vs zenoh-python's own put/subscriber
of the same frames, the same-host path (framebus.zenoh handing over to framebus's own
channel) and framebus's local channel itself, at 1080p and 4K BGRA; and, with
--capped, each encoding on a 100 Mbit/s link between two network namespaces.

A producer process writes each frame (np.copyto from a source frame: into the acquired
framebus frame, or into a NumPy array that zenoh-python then needs as `bytes`, i.e.
`.tobytes()`) and hands it off (`pub.send(f)` / `pub.put(payload, attachment=...)`);
the consumer (this process) receives it as a NumPy array (framebus: `np.asarray(frame)`,
zero-copy over the slot; zenoh-python: `np.frombuffer(sample.payload.to_bytes())`)
and reads every byte (uint64-view sum). Every case is lossless (congestion control
BLOCK, framebus mode="lossless"), peer to peer over tcp/127.0.0.1 with scouting off.

Cases:
* fbzenoh: framebus.zenoh over Zenoh's TCP (local=False on both ends).
* zenohpy: zenoh-python's put/subscriber over loopback TCP: its shared-memory transport off
  (`transport.shared_memory.enabled: false`), as framebus.zenoh with local=False.
* zenohshm: zenoh-python with its defaults: eclipse-zenoh wheels are built with shared
  memory and enable its *transport optimisation*, which puts messages larger than 3 KiB
  that fit its 16 MiB arena into shared memory when both peers are on one host — so
  1080p frames (8.3 MB) do not cross the loopback there, and 4K frames (33 MB) do.
* fblocal: framebus.zenoh with local=True (the default): same host, so after the first
  frames the subscriber reads the publisher's slots through framebus's channel.
* channel: framebus's local channel (framebus.Publisher/Subscriber, lossless depth 4).

* max: unpaced producer — frames/s, GB/s, CPU per frame (both processes' user+system
  CPU, all threads, / frames).
* paced (--rate fps): latency p50/p99 from the producer's t0 (before the write, carried
  in the frame's timestamp / the attachment) to the consumer having the array.

Cases alternate within each repeat (A B C D A B C D ...); medians of --repeats.

Usage: python bench/bench_zenoh.py [--sizes 1080p,4K] [--frames 200] [--rate 30]
                                   [--repeats 3] [--cases fbzenoh,zenohpy,fblocal,channel]
       python bench/bench_zenoh.py --capped [--seconds 10]   # root: netns + tc
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
CASES = ["fbzenoh", "zenohpy", "zenohshm", "fblocal", "channel"]
QUIET = {"multicast": {"enabled": False}, "gossip": {"enabled": False}}
RESULTS = Path(__file__).resolve().parent / "results" / "current.jsonl"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cfg(port, listen, host="127.0.0.1", shm=None):
    """A peer configuration; `shm=False`: zenoh-python's shared-memory transport off."""
    c = {"mode": "peer", "scouting": QUIET}
    if shm is not None:
        c["transport"] = {"shared_memory": {"enabled": shm}}
    if listen:
        c["listen"] = {"endpoints": [f"tcp/{host}:{port}"]}
    else:
        c["connect"] = {"endpoints": [f"tcp/{host}:{port}"]}
        c["listen"] = {"endpoints": []}
    return c


def zcfg(case, port, listen):
    """zenoh-python's configuration: `zenohpy` over TCP, `zenohshm` its defaults."""
    return cfg(port, listen, shm=None if case == "zenohshm" else False)


def make_src(w, h):
    return np.random.default_rng(0).integers(0, 256, (h, w, 4), dtype=np.uint8)


def channel_name(key):
    return key.replace("/", "-")


# ---------------------------------------------------------------- producer (child)
def open_producer(case, w, h, port, key):
    """`(send(src, t0_ns, k), close)` for one case; waits until the consumer is there."""
    if case in ("fbzenoh", "fblocal"):
        from framebus import zenoh as fz

        pub = fz.Publisher(key, config=cfg(port, False), mode="lossless", local=case == "fblocal")
        pub.wait_for_subscribers(1, timeout=30)
    elif case == "channel":
        import framebus

        pub = framebus.Publisher(channel_name(key), mode="lossless", depth=4)
        pub.wait_for_subscribers(1, timeout=10)
    else:
        import zenoh

        s = zenoh.open(zenoh.Config.from_json5(json.dumps(zcfg(case, port, False))))
        zpub = s.declare_publisher(key, congestion_control=zenoh.CongestionControl.BLOCK)
        buf = np.empty((h, w, 4), np.uint8)
        while not zpub.matching_status.matching:
            time.sleep(0.01)

        def put(src, t0, k):
            np.copyto(buf, src)
            zpub.put(buf.tobytes(), attachment=f"{t0} {k}".encode())

        return put, s.close

    def send(src, t0, k):
        f = pub.acquire(w, h, "BGRA")  # timestamp = now (t0)
        np.copyto(np.asarray(f), src)
        pub.send(f)

    return send, pub.close


def produce(case, w, h, n, rate, port, key):
    src = make_src(w, h)
    period = 1.0 / rate if rate else 0.0
    send, close = open_producer(case, w, h, port, key)
    nxt = time.monotonic()
    for k in range(n):
        send(src, time.monotonic_ns(), k)
        if period:
            nxt += period
            time.sleep(max(0.0, nxt - time.monotonic()))
    sys.stdin.readline()  # the consumer has every frame: closing now loses nothing
    close()


# ---------------------------------------------------------------- consumer (here)
def open_consumer(case, w, h, port, key):
    """`(recv() -> (array, t0_ns), close, info())` for one case; call after the producer
    started (the local channel's subscriber connects to it)."""
    if case in ("fbzenoh", "fblocal"):
        from framebus import zenoh as fz

        sub = fz.Subscriber(key, config=cfg(port, True), local=case == "fblocal")

        def recv():
            f = sub.recv(timeout=30)
            return np.asarray(f), f.timestamp

        return recv, sub.close, lambda: {"route": sub.route, **sub.stats()}
    if case == "channel":
        import framebus

        sub = framebus.Subscriber(channel_name(key), timeout=20)

        def recv():
            f = sub.recv(timeout=30)
            return np.asarray(f), f.timestamp

        return recv, sub.close, dict
    import zenoh

    s = zenoh.open(zenoh.Config.from_json5(json.dumps(zcfg(case, port, True))))
    zsub = s.declare_subscriber(key)

    def recv():
        sample = zsub.recv()
        a = np.frombuffer(sample.payload.to_bytes(), np.uint8).reshape(h, w, 4)
        return a, int(sample.attachment.to_bytes().split()[0])

    return recv, s.close, dict


def consume(case, w, h, n, rate, port, key):
    """Start the producer, receive n frames; returns (seconds, cpu here, cpu of the
    producer, latencies_ns, info)."""
    lat = []
    argv = [sys.executable, __file__, "--produce", case, *map(str, (w, h, n, rate, port)), key]
    zenoh_side = case != "channel"
    if zenoh_side:  # the Zenoh subscriber listens before the producer connects
        recv, close, info = open_consumer(case, w, h, port, key)
    child = subprocess.Popen(argv, stdin=subprocess.PIPE)
    if not zenoh_side:
        recv, close, info = open_consumer(case, w, h, port, key)

    def handle():
        a, t0 = recv()
        lat.append(time.monotonic_ns() - t0)
        a.reshape(-1).view(np.uint64).sum()

    handle()  # first frame: connection set up; the clock starts after it
    cpu0 = time.process_time()
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    for _ in range(n - 1):
        handle()
    dt = time.perf_counter() - t0
    cpu_here = time.process_time() - cpu0
    got = info()
    child.communicate(b"\n", timeout=60)
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    close()
    # The child's whole CPU (incl. its set-up) over its frames.
    cpu_child = (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime)
    return dt, cpu_here, cpu_child, lat[1:], got


def run_case(case, size, n, rate):
    w, h = SIZES[size]
    port = free_port()
    key = f"bench/zenoh/{os.getpid()}/{port}"
    dt, cpu_here, cpu_child, lat, got = consume(case, w, h, n, rate, port, key)
    lat = np.array(lat) / 1e6
    if case == "fblocal":  # the same-host path must really have been taken
        assert got["route"] == "local" and got["local"] >= n - 10, got
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
    ap.add_argument("--capped", action="store_true", help="per encoding on a 100 Mbit/s link")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--encodings", default="raw,lz4,zstd,jpeg")
    a = ap.parse_args()
    if a.produce:
        case, w, h, n, rate, port, key = a.produce
        produce(case, int(w), int(h), int(n), float(rate), int(port), key)
        return
    if a.capped:
        capped(a)
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
        if "fbzenoh" in med and "zenohshm" in med:
            lines.append(
                (
                    "raw, framebus over loopback TCP vs zenoh-python's defaults (SHM), frames/s",
                    size,
                    med["fbzenoh"]["fps"],
                    "zenoh-python put/subscriber, shared-memory transport",
                    med["zenohshm"]["fps"],
                    "fps",
                    "higher",
                )
            )
        if "fblocal" in med and "channel" in med:
            lines.append(
                (
                    "same host: zenoh (local hand-off) vs local channel, frames/s",
                    size,
                    med["fblocal"]["fps"],
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


# ---------------------------------------------------------------- --capped
CAPPED_SUB = """
import json, sys, time
from framebus import ChannelClosed, zenoh as fz
sub = fz.Subscriber(key, config=cfg)
print(json.dumps("ready"), flush=True)
ages, t_first = [], None
while True:
    try:
        f = sub.recv(timeout=30)
    except ChannelClosed:
        break
    t_first = t_first or time.monotonic()
    ages.append((time.monotonic_ns() - f.timestamp) / 1e9)
    del f
secs = time.monotonic() - t_first
print(json.dumps({"ages": ages, "secs": secs, "stats": sub.stats()}), flush=True)
"""

CAPPED_PUB = """
import json, time, numpy as np
from framebus import zenoh as fz
pub = fz.Publisher(key, config=cfg, mode="latest", encoding=encoding)
pub.wait_for_subscribers(1, timeout=30)
frames = [screen(k) for k in range(8)]
end, k, nxt = time.monotonic() + seconds, 0, time.monotonic()
while time.monotonic() < end:
    f = pub.acquire(1920, 1080, "BGRA")
    np.copyto(np.asarray(f), frames[k % len(frames)])
    pub.send(f)
    del f
    k += 1
    nxt += 1 / 30
    time.sleep(max(0.0, nxt - time.monotonic()))
print(json.dumps({"made": k, "stats": pub.stats()}), flush=True)
pub.close()
"""

# Screen-like content: flat panels, a gradient, and text-like noise in a few bands, moving
# a little every frame (what lz4/zstd meet on a desktop; random pixels would not compress).
SCREEN = """
import numpy as np
def screen(k):
    h, w = 1080, 1920
    a = np.full((h, w, 4), 240, np.uint8)
    a[:40] = (60, 60, 60, 255)
    a[40:, :300] = (200, 210, 220, 255)
    y, x = np.mgrid[0:400, 0:800]
    a[100:500, 400:1200, 0] = (x * 255 // 800).astype(np.uint8)
    a[100:500, 400:1200, 1] = (y * 255 // 400).astype(np.uint8)
    rng = np.random.default_rng(k)
    for top in range(560, 1040, 24):
        row = rng.integers(0, 2, (14, 1400), dtype=np.uint8) * 200
        a[top : top + 14, 400 + k : 1800 + k, :3] = row[..., None]
    a[..., 3] = 255
    return a
"""


def capped(a):
    """raw/lz4/zstd/jpeg, latest mode, 1080p screen content at 30 fps for --seconds over a
    veth pair capped to 100 Mbit/s (tests/zenoh_env.Link): frames/s received, bytes per
    frame, age p50/p99."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from zenoh_env import Link, child, connect_cfg, listen_cfg, read_line, reap

    link = Link()
    link.up_()
    rows = []
    try:
        for enc in a.encodings.split(","):
            print(f"  capped link: {enc}", file=sys.stderr, flush=True)
            key = f"bench/zenoh/capped/{enc}"
            sub = child(
                CAPPED_SUB, netns=link.sub_ns, key=key, cfg=listen_cfg(link.SUB_PORT, link.SUB_ADDR)
            )
            assert read_line(sub) == "ready"
            pub = child(
                SCREEN + CAPPED_PUB,
                netns=link.pub_ns,
                key=key,
                cfg=connect_cfg(link.port, link.SUB_ADDR),
                encoding=enc,
                seconds=a.seconds,
            )
            try:
                p = read_line(pub)
                r = read_line(sub)
            finally:
                reap(pub, timeout=60)
                reap(sub, timeout=60)
            ages, st = np.array(r["ages"]), r["stats"]
            rows.append(
                [
                    enc,
                    p["made"] / a.seconds,
                    len(ages) / r["secs"],
                    st["wire_bytes"] / max(1, st["received"]) / 1e3,
                    float(np.percentile(ages, 50)) * 1e3,
                    float(np.percentile(ages, 99)) * 1e3,
                    p["stats"]["encode_ns"] / max(1, p["stats"]["sent"]) / 1e6,
                ]
            )
    finally:
        link.down_()
    harness.report(
        "zenoh_capped",
        f"framebus.zenoh per encoding on a capped link ({link.qdisc}), latest, 1080p screen",
        [
            "encoding",
            "source frames/s",
            "received frames/s",
            "kB per frame",
            "age p50 ms",
            "age p99 ms",
            "encode ms/frame",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
