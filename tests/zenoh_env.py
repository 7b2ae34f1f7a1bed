"""What the Zenoh tests share: test images, Zenoh configurations on free loopback ports,
publisher processes the test controls, condition waits, and a capped link between two
network namespaces.

Children are plain `python -c` processes (spawned, not forked: a Zenoh session owns
threads). A child publisher does not close on a timer: it waits until the test calls
`release(p)` (a line on its stdin), so a slow machine cannot make it close before its
frames are through.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np

PATTERN = """
import numpy as np
def pattern(k, shape):
    n = int(np.prod(shape))
    return ((np.arange(n, dtype=np.uint64) * 7 + k * 31) % 251).astype(np.uint8).reshape(shape)
def smooth(k, h, w):
    y, x = np.mgrid[0:h, 0:w]
    a = np.empty((h, w, 4), np.uint8)
    a[..., 0] = x * 255 // w
    a[..., 1] = y * 255 // h
    a[..., 2] = (x + y + k) % 256
    a[..., 3] = 255
    return a
"""
_ns: dict = {}
exec(PATTERN, _ns)  # noqa: S102 - the same code runs in the children
pattern, smooth = _ns["pattern"], _ns["smooth"]

QUIET = {"multicast": {"enabled": False}, "gossip": {"enabled": False}}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listen_cfg(port, host="127.0.0.1"):
    return {"mode": "peer", "listen": {"endpoints": [f"tcp/{host}:{port}"]}, "scouting": QUIET}


def connect_cfg(port, host="127.0.0.1"):
    return {
        "mode": "peer",
        "connect": {"endpoints": [f"tcp/{host}:{port}"]},
        "listen": {"endpoints": []},
        "scouting": QUIET,
    }


def router_cfgs(port):
    """A Zenoh router's configuration listening on 127.0.0.1:`port`, and a client's for it."""
    router = {
        "mode": "router",
        "scouting": QUIET,
        "listen": {"endpoints": [f"tcp/127.0.0.1:{port}"]},
    }
    client = {"mode": "client", "connect": {"endpoints": [f"tcp/127.0.0.1:{port}"]}}
    return router, client


def wait_until(cond, timeout=20.0, what="a condition"):
    """Poll `cond` every 10 ms until it is true; AssertionError naming `what` after `timeout`."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.01)


def child(code, *, netns=None, monotonic_offset=None, **kw):
    """Start `python -c` with PATTERN and `kw` as globals (in network namespace `netns`;
    with `monotonic_offset` seconds added to its CLOCK_MONOTONIC in a time namespace of
    its own, as on a host booted that much earlier); stdin and stdout are pipes
    (`release`, `read_line`)."""
    pre = PATTERN + "".join(f"{k} = {v!r}\n" for k, v in kw.items())
    argv = [sys.executable, "-c", pre + textwrap.dedent(code)]
    if monotonic_offset is not None:
        timens = ["unshare", "--time", f"--monotonic={monotonic_offset}", "--fork"]
        argv = [*timens, "--kill-child", *argv]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def release(p):
    """Tell a child waiting in `sys.stdin.readline()` to go on."""
    with contextlib.suppress(BrokenPipeError, ValueError):
        p.stdin.write("\n")
        p.stdin.flush()


def read_line(p):
    """The child's next line of stdout, parsed as JSON."""
    line = p.stdout.readline()
    assert line, f"child {p.pid} exited ({p.poll()}) before printing"
    return json.loads(line)


def reap(p, timeout=20, ok=True):
    """Release the child and wait for it: exit status 0 within `timeout` if `ok`, else
    killed once `timeout` has passed."""
    try:
        release(p)
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            if ok:
                raise
            rc = None
        if ok:
            assert rc == 0, f"child exited with {rc}"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for f in (p.stdin, p.stdout):
            with contextlib.suppress(BrokenPipeError, ValueError):
                f.close()


PUBLISH = """
import json, sys, time, numpy as np
from framebus import zenoh as fz
pub = fz.Publisher(key, config=cfg, mode=mode, encoding=encoding, quality=quality, local=local)
pub.wait_for_subscribers(1, timeout=30)  # a frame sent before goes nowhere
k = 0
while count is None or k < count:
    f = pub.acquire(w, h, fmt)
    a = np.asarray(f)
    a[...] = (smooth(k, h, w) if fmt == "BGRA" and encoding == "jpeg" else pattern(k, a.shape))
    del a
    pub.send(f)
    del f
    k += 1
    if period:
        time.sleep(period)
print(json.dumps(pub.stats()), flush=True)
sys.stdin.readline()  # the test has what it needs
pub.close()
"""


def start_publisher(
    key,
    cfg,
    *,
    mode="lossless",
    encoding="raw",
    quality=None,
    count=10,
    w=64,
    h=48,
    fmt="BGRA",
    period=0.0,
    local=False,
    netns=None,
):
    """A framebus.zenoh publisher process sending `count` frames (None: until killed) of
    `pattern(k)` (`smooth(k)` for JPEG). It prints its stats() when done, then waits for
    `release`. `cfg`: a Zenoh configuration, or a port to connect to on 127.0.0.1."""
    if isinstance(cfg, int):
        cfg = connect_cfg(cfg)
    return child(
        PUBLISH,
        netns=netns,
        key=key,
        cfg=cfg,
        mode=mode,
        encoding=encoding,
        quality=quality,
        count=count,
        w=w,
        h=h,
        fmt=fmt,
        period=period,
        local=local,
    )


def recv_frames(sub, n, shape, timeout=20):
    """Receive n frames and check each is pattern(seq - 1); returns their sequence numbers."""
    seqs = []
    for _ in range(n):
        f = sub.recv(timeout=timeout)
        a = np.asarray(f)
        assert not a.flags.writeable
        assert a.shape == shape, (a.shape, shape)
        assert np.array_equal(a, pattern(f.seq - 1, shape)), f"frame {f.seq} differs"
        seqs.append(f.seq)
        del a, f
    return seqs


def fds():
    return len(os.listdir("/proc/self/fd"))


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sh(*a):
    return subprocess.run(a, check=True, capture_output=True, text=True)


DELAY_RELAY = """
import collections, socket, sys, threading, time
listen, target = (sys.argv[1], int(sys.argv[2])), (sys.argv[3], int(sys.argv[4]))
delay = float(sys.argv[5])
def pump(src, dst, delay):
    # src -> dst, each chunk sent `delay` s after it arrived; at most 4 MiB held, so
    # a reader that stops reading stops the sender (TCP backpressure, as on a link).
    q, cv, held = collections.deque(), threading.Condition(), [0]
    def read():
        while True:
            try:
                b = src.recv(1 << 16)
            except OSError:
                b = b""
            with cv:
                while held[0] > 4 << 20:
                    cv.wait()
                q.append((time.monotonic() + delay, b))
                held[0] += len(b)
                cv.notify_all()
            if not b:
                return
    threading.Thread(target=read, daemon=True).start()
    try:
        while True:
            with cv:
                while not q:
                    cv.wait()
                due, b = q[0]
            time.sleep(max(0.0, due - time.monotonic()))
            with cv:
                q.popleft()
                held[0] -= len(b)
                cv.notify_all()
            if not b:
                break
            dst.sendall(b)
    except OSError:
        pass
    for s in (src, dst):  # one side gone: both connections end, as Zenoh's link would
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
srv = socket.create_server(listen)
print("ready", flush=True)
while True:
    a, _ = srv.accept()
    try:
        b = socket.create_connection(target)
    except OSError:
        a.close()
        continue
    for s in (a, b):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=pump, args=(a, b, delay), daemon=True).start()
    threading.Thread(target=pump, args=(b, a, 0.0), daemon=True).start()
"""


class Link:
    """Two network namespaces joined by a veth pair on 10.77.0.1 (publisher side) and
    10.77.0.2 (subscriber side), the publisher's side capped to 100 Mbit/s with 20 ms
    delay: netem; where the kernel has no sch_netem (the CI VM's), tbf for the rate and a
    relay in the subscriber's namespace (DELAY_RELAY) that holds each chunk travelling
    from the publisher 20 ms. Subscribers listen on SUB_ADDR:SUB_PORT; publishers
    connect to SUB_ADDR:`port` (the relay's port, or SUB_PORT)."""

    PUB_ADDR, SUB_ADDR = "10.77.0.1", "10.77.0.2"
    SUB_PORT, RELAY_PORT = 7447, 7448
    DELAY_S = 0.020

    def __init__(self):
        tag = f"fbz{os.getpid() % 100000}"
        self.pub_ns, self.sub_ns = f"{tag}p", f"{tag}s"
        self.pub_dev, self.sub_dev = f"{tag}a", f"{tag}b"
        self.qdisc = None
        self.port = self.SUB_PORT
        self.relay = None

    def up_(self):
        sh("ip", "netns", "add", self.pub_ns)
        sh("ip", "netns", "add", self.sub_ns)
        sh("ip", "link", "add", self.pub_dev, "type", "veth", "peer", "name", self.sub_dev)
        sh("ip", "link", "set", self.pub_dev, "netns", self.pub_ns)
        sh("ip", "link", "set", self.sub_dev, "netns", self.sub_ns)
        for ns, dev, addr in (
            (self.pub_ns, self.pub_dev, self.PUB_ADDR),
            (self.sub_ns, self.sub_dev, self.SUB_ADDR),
        ):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        tc = ("ip", "netns", "exec", self.pub_ns, "tc", "qdisc", "add", "dev", self.pub_dev)
        try:
            sh(*tc, "root", "netem", "rate", "100mbit", "delay", "20ms")
            self.qdisc = "netem 100mbit 20ms"
        except subprocess.CalledProcessError:
            # Kernels without sch_netem (the CI VM's): the same rate cap through a token
            # bucket, the delay from a relay in the subscriber's namespace.
            sh(*tc, "root", "tbf", "rate", "100mbit", "burst", "64kb", "latency", "50ms")
            self.qdisc = "tbf 100mbit + 20 ms relay"
            self.relay = subprocess.Popen(
                ["ip", "netns", "exec", self.sub_ns, sys.executable, "-c", DELAY_RELAY]
                + [self.SUB_ADDR, str(self.RELAY_PORT), self.SUB_ADDR, str(self.SUB_PORT)]
                + [str(self.DELAY_S)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert self.relay.stdout.readline() == "ready\n", "the delay relay did not start"
            self.port = self.RELAY_PORT

    def set_link(self, up):
        """Take the publisher's end of the veth down or bring it back up."""
        state = "up" if up else "down"
        sh("ip", "-n", self.pub_ns, "link", "set", self.pub_dev, state)

    def down_(self):
        if self.relay is not None:
            self.relay.kill()
            self.relay.wait()
            self.relay.stdout.close()
        for ns in (self.pub_ns, self.sub_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # veth goes too
