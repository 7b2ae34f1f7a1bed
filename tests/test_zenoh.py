"""framebus.zenoh end to end: real Zenoh sessions in separate processes over
tcp/127.0.0.1:<free port> in peer mode (no network beyond this machine), interop
with plain zenoh-python (`eclipse-zenoh`) both ways, kill -9 of the publisher,
bad configurations, and fds/RSS over many frames.

Children are plain `python -c` processes (spawned, not forked: a Zenoh session owns
threads). Each test gets its own port and key, so the suite can run in parallel with
others.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import framebus
import numpy as np
import pytest
from framebus import zenoh as fz

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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


QUIET = {"multicast": {"enabled": False}, "gossip": {"enabled": False}}


def listen_cfg(port):
    return {"mode": "peer", "listen": {"endpoints": [f"tcp/127.0.0.1:{port}"]}, "scouting": QUIET}


def connect_cfg(port):
    return {
        "mode": "peer",
        "connect": {"endpoints": [f"tcp/127.0.0.1:{port}"]},
        "listen": {"endpoints": []},
        "scouting": QUIET,
    }


def child(code, **kw):
    """Start `python -c` with PATTERN and the helpers defined; kw become globals."""
    pre = PATTERN + "".join(f"{k} = {v!r}\n" for k, v in kw.items())
    return subprocess.Popen([sys.executable, "-c", pre + textwrap.dedent(code)])


PUBLISH = """
import time, numpy as np
from framebus import zenoh as fz
pub = fz.Publisher(key, config=cfg, mode=mode, encoding=encoding, quality=quality)
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
time.sleep(linger)
pub.close()
"""


def start_publisher(
    key,
    port,
    *,
    mode="lossless",
    encoding="raw",
    quality=None,
    count=10,
    w=64,
    h=48,
    fmt="BGRA",
    period=0.0,
    linger=0.5,
):
    return child(
        PUBLISH,
        key=key,
        cfg=connect_cfg(port),
        mode=mode,
        encoding=encoding,
        quality=quality,
        count=count,
        w=w,
        h=h,
        fmt=fmt,
        period=period,
        linger=linger,
    )


@pytest.fixture
def link():
    """A subscriber listening on a free port, and a key."""
    port = free_port()
    key = f"pytest/zenoh/{os.getpid()}/{port}"
    sub = fz.Subscriber(key, config=listen_cfg(port))
    yield sub, key, port
    sub.close()


def reap(p, timeout=20):
    try:
        assert p.wait(timeout) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_lossless_frames_arrive_pixel_exact_in_order_across_processes(link):
    sub, key, port = link
    n = 60
    p = start_publisher(key, port, count=n, w=640, h=480)
    try:
        for k in range(n):
            f = sub.recv(timeout=20)
            assert f.seq == k + 1
            assert (f.width, f.height, f.format) == (640, 480, "BGRA")
            a = np.asarray(f)
            assert not a.flags.writeable
            assert np.array_equal(a, pattern(k, a.shape)), f"frame {k} differs"
            del a, f
        with pytest.raises(framebus.ChannelClosed):
            sub.recv(timeout=20)
    finally:
        reap(p)
    s = sub.stats()
    assert s["received"] == n and s["skipped"] == 0 and s["bad"] == 0
    assert s["slot_bytes"] == n * 640 * 480 * 4


@pytest.mark.parametrize("encoding", ["raw", "lz4", "zstd", "jpeg"])
def test_every_encoding_round_trips(link, encoding):
    sub, key, port = link
    fmt = "BGRA"
    p = start_publisher(key, port, encoding=encoding, count=3, w=1920, h=1080, fmt=fmt)
    try:
        for k in range(3):
            f = sub.recv(timeout=20)
            a = np.asarray(f)
            if encoding == "jpeg":
                want = smooth(k, 1080, 1920).astype(np.float64)
                mse = np.mean((a.astype(np.float64) - want) ** 2)
                psnr = 10 * np.log10(255.0**2 / max(mse, 1e-9))
                assert psnr > 35, psnr
            else:
                assert np.array_equal(a, pattern(k, a.shape)), f"{encoding} frame {k} differs"
            del a, f
    finally:
        reap(p)
    s = sub.stats()
    if encoding == "raw":
        assert s["wire_bytes"] == s["slot_bytes"]
    elif encoding == "jpeg":
        assert s["wire_bytes"] < s["slot_bytes"] / 10


def test_plain_zenoh_subscriber_reads_framebus_frames():
    zenoh = pytest.importorskip("zenoh")
    port = free_port()
    key = f"pytest/zenoh/plain-sub/{port}"
    got = []
    with zenoh.open(zenoh.Config.from_json5(json.dumps(listen_cfg(port)))) as s:
        zsub = s.declare_subscriber(key)
        p = start_publisher(key, port, count=5, w=320, h=200, fmt="RGB")
        try:
            for _ in range(5):
                sample = zsub.recv()
                meta = json.loads(sample.attachment.to_bytes())
                h, w, stride = meta["height"], meta["width"], meta["stride"]
                assert (meta["format"], meta["encoding"], w, h) == ("RGB", "raw", 320, 200)
                rows = np.frombuffer(sample.payload.to_bytes(), np.uint8).reshape(h, stride)
                got.append((meta["seq"], rows[:, : w * 3].reshape(h, w, 3)))
        finally:
            reap(p)
    assert [g[0] for g in got] == [1, 2, 3, 4, 5]
    for k, (_, a) in enumerate(got):
        assert np.array_equal(a, pattern(k, a.shape))


def test_plain_zenoh_publisher_feeds_framebus_subscriber(link):
    pytest.importorskip("zenoh")
    sub, key, port = link
    code = """
    import json, time, zenoh
    s = zenoh.open(zenoh.Config.from_json5(json.dumps(cfg)))
    pub = s.declare_publisher(key, congestion_control=zenoh.CongestionControl.BLOCK)
    while not pub.matching_status.matching:
        time.sleep(0.01)
    for k in range(4):
        a = pattern(k, (90, 160, 4))
        meta = {"framebus": 1, "width": 160, "height": 90, "stride": 640, "format": "BGRA",
                "timestamp_ns": time.monotonic_ns(), "seq": k + 1, "encoding": "raw",
                "mode": "lossless"}  # queue every frame (absent: keep the newest)
        pub.put(a.tobytes(), attachment=json.dumps(meta).encode())
    time.sleep(0.5)
    s.close()
    """
    p = child(code, key=key, cfg=connect_cfg(port))
    try:
        # A plain publisher has no liveliness token: frames arrive, no ChannelClosed.
        frames = [sub.recv(timeout=20) for _ in range(4)]
    finally:
        reap(p)
    for k, f in enumerate(frames):
        assert f.seq == k + 1
        assert np.array_equal(np.asarray(f), pattern(k, (90, 160, 4)))


def test_a_sample_that_is_not_a_frame_is_refused_naming_why(link):
    pytest.importorskip("zenoh")
    sub, key, port = link
    code = """
    import json, time, zenoh
    s = zenoh.open(zenoh.Config.from_json5(json.dumps(cfg)))
    pub = s.declare_publisher(key)
    while not pub.matching_status.matching:
        time.sleep(0.01)
    s.put(key, b"hello")
    time.sleep(0.5)  # no "mode" in the attachment: latest, so one at a time
    s.put(key, b"x" * 10, attachment=json.dumps({"framebus": 1, "width": 4, "height": 4,
          "format": "BGRA", "encoding": "raw"}).encode())
    time.sleep(0.5)
    s.close()
    """
    p = child(code, key=key, cfg=connect_cfg(port))
    try:
        with pytest.raises(framebus.FramebusError, match="no attachment"):
            sub.recv(timeout=20)
        with pytest.raises(framebus.FramebusError, match="raw payload has 10 bytes"):
            sub.recv(timeout=20)
    finally:
        reap(p)
    assert sub.stats()["bad"] == 2


def test_kill_9_publisher_raises_channel_closed_promptly_and_a_new_one_recovers(link):
    sub, key, port = link
    for round_ in range(2):
        p = start_publisher(key, port, mode="latest", count=None, period=0.01)
        try:
            for _ in range(5):
                sub.recv(timeout=20)
            assert sub.publishers == 1
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            t = time.monotonic()
            with pytest.raises(framebus.ChannelClosed, match="publisher closed or gone"):
                while True:
                    sub.recv(timeout=15)
            waited = time.monotonic() - t
            assert waited < 2.0, f"round {round_}: ChannelClosed after {waited:.2f} s"
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_bad_configs_and_keys_raise_errors_naming_them(tmp_path):
    with pytest.raises(ValueError, match="mdoe"):
        fz.Subscriber("a/b", config={"mdoe": "peer"})
    with pytest.raises(ValueError, match="pear"):
        fz.Publisher("a/b", config='{mode: "pear"}')
    missing = tmp_path / "nope.json5"
    with pytest.raises(ValueError, match="nope.json5"):
        fz.Publisher("a/b", config=missing)
    with pytest.raises(ValueError, match="nope.json5"):
        fz.Subscriber("a/b", config=str(missing))
    with pytest.raises(TypeError, match="config"):
        fz.Subscriber("a/b", config=42)
    q = {"mode": "peer", "listen": {"endpoints": []}, "scouting": QUIET}
    with pytest.raises(ValueError, match=r"a/\*/b"):
        fz.Publisher("a/*/b", config=q)
    with pytest.raises(ValueError, match="a//b"):
        fz.Subscriber("a//b", config=q)
    with pytest.raises(ValueError, match="encoding"):
        fz.Publisher("a/b", config=q, encoding="png")
    with pytest.raises(ValueError, match="quality"):
        fz.Publisher("a/b", config=q, encoding="jpeg", quality=0)
    with pytest.raises(ValueError, match="mode"):
        fz.Publisher("a/b", config=q, mode="fast")
    with fz.Publisher("a/b", config=q, encoding="jpeg") as pub:
        with pytest.raises(ValueError, match="NV12"):
            pub.acquire(64, 64, "NV12")
    assert pub.closed
    with pytest.raises(framebus.ChannelClosed):
        pub.send(framebus.FramePool().acquire(4, 4))


def _fds():
    return len(os.listdir("/proc/self/fd"))


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_fds_and_rss_stay_flat_over_10000_frames(link):
    sub, key, port = link
    n = 10_000
    p = start_publisher(key, port, count=n, w=160, h=120)
    try:
        for _ in range(1000):
            sub.recv(timeout=20)
        fds, rss = _fds(), _rss()
        for _ in range(n - 1000):
            f = sub.recv(timeout=20)
            del f
        grew = _rss() - rss
        assert _fds() == fds
        assert grew < 8 << 20, f"RSS grew {grew} bytes over {n - 1000} frames"
        # A leak grows with the frame count; what may remain is the subscriber's own
        # hand-off (frames arrived after the last recv or being decoded): a few slots.
        assert sub.pool.stats()["slots_in_use"] <= 4, sub.pool.stats()
    finally:
        reap(p, timeout=60)


def test_latest_mode_hands_over_only_the_newest(link):
    sub, key, port = link
    p = start_publisher(key, port, mode="latest", count=50, w=256, h=256, linger=6.0)
    try:
        time.sleep(4.0)  # all 50 sent, none taken
        f = sub.recv(timeout=5)
        assert f.seq == 50
        assert sub.try_recv() is None
        assert sub.stats()["skipped"] >= 1
    finally:
        reap(p)


def test_closed_subscriber_raises_and_iteration_ends(link):
    sub, key, port = link
    p = start_publisher(key, port, count=3)
    try:
        got = [f.seq for f in sub]  # ends with the publisher's close
    finally:
        reap(p)
    assert got == [1, 2, 3]
    sub.close()
    assert sub.closed
    with pytest.raises(framebus.ChannelClosed, match="closed"):
        sub.recv(timeout=0)


def _certs(d):
    """A CA and a server certificate for 127.0.0.1, made with openssl."""
    ext = d / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *a: subprocess.run(a, cwd=d, check=True, capture_output=True)  # noqa: E731
    run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=framebus-test-ca",
    )
    run(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "req.csr",
        "-subj",
        "/CN=localhost",
    )
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    )
    return d / "ca.pem", d / "cert.pem", d / "key.pem"


def test_tls_with_user_and_password_is_accepted_and_a_wrong_password_gets_nothing(tmp_path):
    if subprocess.run(["which", "openssl"], capture_output=True).returncode:
        pytest.skip("openssl not installed")
    ca, cert, key = _certs(tmp_path)
    creds = tmp_path / "users.txt"
    creds.write_text("camera:s3cret\n")
    port = free_port()
    topic = f"pytest/zenoh/tls/{port}"
    server = {
        "mode": "peer",
        "listen": {"endpoints": [f"tls/127.0.0.1:{port}"]},
        "scouting": QUIET,
        "transport": {
            "link": {
                "tls": {
                    "listen_private_key": str(key),
                    "listen_certificate": str(cert),
                    "root_ca_certificate": str(ca),
                }
            },
            "auth": {
                "usrpwd": {"user": "viewer", "password": "v1ew", "dictionary_file": str(creds)}
            },
        },
    }

    def client(password, proto="tls"):
        return {
            "mode": "peer",
            "connect": {"endpoints": [f"{proto}/127.0.0.1:{port}"]},
            "listen": {"endpoints": []},
            "scouting": QUIET,
            "transport": {
                "link": {"tls": {"root_ca_certificate": str(ca)}},
                "auth": {"usrpwd": {"user": "camera", "password": password}},
            },
        }

    sub = fz.Subscriber(topic, config=server)
    try:
        for bad in (client("wrong"), client("s3cret", proto="tcp")):
            p = child(
                PUBLISH,
                key=topic,
                cfg=bad,
                mode="lossless",
                encoding="raw",
                quality=None,
                count=3,
                w=32,
                h=32,
                fmt="BGRA",
                period=0.0,
                linger=0.5,
            )
            with pytest.raises(TimeoutError):
                sub.recv(timeout=4)
            p.kill()
            p.wait()
            assert sub.publishers == 0
        p = child(
            PUBLISH,
            key=topic,
            cfg=client("s3cret"),
            mode="lossless",
            encoding="raw",
            quality=None,
            count=3,
            w=32,
            h=32,
            fmt="BGRA",
            period=0.0,
            linger=0.5,
        )
        try:
            for k in range(3):
                f = sub.recv(timeout=20)
                assert np.array_equal(np.asarray(f), pattern(k, (32, 32, 4)))
        finally:
            reap(p)
    finally:
        sub.close()


def test_frames_go_through_a_router_between_two_clients():
    zenoh = pytest.importorskip("zenoh")
    port = free_port()
    topic = f"pytest/zenoh/router/{port}"
    router_cfg = {
        "mode": "router",
        "listen": {"endpoints": [f"tcp/127.0.0.1:{port}"]},
        "scouting": QUIET,
    }
    client = {"mode": "client", "connect": {"endpoints": [f"tcp/127.0.0.1:{port}"]}}
    with zenoh.open(zenoh.Config.from_json5(json.dumps(router_cfg))):
        sub = fz.Subscriber(topic, config=client)
        try:
            p = child(
                PUBLISH,
                key=topic,
                cfg=client,
                mode="lossless",
                encoding="lz4",
                quality=None,
                count=5,
                w=200,
                h=100,
                fmt="BGRA",
                period=0.0,
                linger=0.5,
            )
            try:
                for k in range(5):
                    f = sub.recv(timeout=20)
                    assert f.seq == k + 1
                    assert np.array_equal(np.asarray(f), pattern(k, (100, 200, 4)))
                with pytest.raises(framebus.ChannelClosed):
                    sub.recv(timeout=20)
            finally:
                reap(p)
        finally:
            sub.close()


def _sh(*a):
    return subprocess.run(a, check=True, capture_output=True, text=True)


@pytest.fixture
def capped_link():
    """Two network namespaces joined by a veth pair on private addresses, the publisher's
    side capped by netem (100 Mbit/s, 20 ms), or by tbf (100 Mbit/s) where the kernel has no
    netem; removed afterwards. Needs root and iproute2."""
    if os.geteuid() != 0 or subprocess.run(["which", "tc"], capture_output=True).returncode:
        pytest.skip("needs root and iproute2 (ip, tc)")
    tag = f"fbz{os.getpid() % 100000}"
    pub_ns, sub_ns = f"{tag}p", f"{tag}s"
    try:
        _sh("ip", "netns", "add", pub_ns)
        _sh("ip", "netns", "add", sub_ns)
        _sh("ip", "link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b")
        _sh("ip", "link", "set", f"{tag}a", "netns", pub_ns)
        _sh("ip", "link", "set", f"{tag}b", "netns", sub_ns)
        for ns, dev, addr in (
            (pub_ns, f"{tag}a", "10.77.0.1/24"),
            (sub_ns, f"{tag}b", "10.77.0.2/24"),
        ):
            _sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        tc = ("ip", "netns", "exec", pub_ns, "tc", "qdisc", "add", "dev", f"{tag}a", "root")
        try:
            _sh(*tc, "netem", "rate", "100mbit", "delay", "20ms")
        except subprocess.CalledProcessError:
            # Kernels without sch_netem (this CI VM's): the same rate cap through a token
            # bucket, without the 20 ms delay.
            _sh(*tc, "tbf", "rate", "100mbit", "burst", "64kb", "latency", "50ms")
    except subprocess.CalledProcessError as e:
        for ns in (pub_ns, sub_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"cannot make network namespaces here: {e.stderr.strip()}")
    yield pub_ns, sub_ns
    for ns in (pub_ns, sub_ns):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # takes the veth along


@pytest.mark.parametrize("encoding", ["jpeg", "raw"])
def test_latest_mode_keeps_age_bounded_on_a_capped_link(capped_link, tmp_path, encoding):
    pub_ns, sub_ns = capped_link
    port = 7447
    topic = "pytest/zenoh/capped"
    out = tmp_path / "ages.json"
    sub_code = f"""
import json, time
from framebus import ChannelClosed, zenoh as fz
cfg = {{"mode": "peer", "listen": {{"endpoints": ["tcp/10.77.0.2:{port}"]}},
        "scouting": {{"multicast": {{"enabled": False}}, "gossip": {{"enabled": False}}}}}}
sub = fz.Subscriber({topic!r}, config=cfg)
ages, seqs, end = [], [], time.monotonic() + 14
while time.monotonic() < end:
    try:
        f = sub.recv(timeout=1)
    except TimeoutError:
        continue
    except ChannelClosed:
        break
    ages.append((time.monotonic_ns() - f.timestamp) / 1e9)
    seqs.append(f.seq)
    del f
json.dump({{"ages": ages, "seqs": seqs, "stats": sub.stats()}}, open({str(out)!r}, "w"))
"""
    pub_code = (
        PATTERN
        + f"""
import time, numpy as np
from framebus import zenoh as fz
cfg = {{"mode": "peer", "connect": {{"endpoints": ["tcp/10.77.0.2:{port}"]}},
        "listen": {{"endpoints": []}},
        "scouting": {{"multicast": {{"enabled": False}}, "gossip": {{"enabled": False}}}}}}
pub = fz.Publisher({topic!r}, config=cfg, mode="latest", encoding={encoding!r},
                   quality={80 if encoding == "jpeg" else None!r})
pub.wait_for_subscribers(1, timeout=30)
end, k = time.monotonic() + 10, 0
while time.monotonic() < end:
    f = pub.acquire(1920, 1080, "BGRA")
    np.asarray(f)[...] = smooth(k, 1080, 1920)
    pub.send(f)
    del f
    k += 1
    time.sleep(1 / 30)
pub.close()
"""
    )
    sub = subprocess.Popen(["ip", "netns", "exec", sub_ns, sys.executable, "-c", sub_code])
    time.sleep(1.0)
    pub = subprocess.Popen(["ip", "netns", "exec", pub_ns, sys.executable, "-c", pub_code])
    try:
        assert pub.wait(60) == 0
        assert sub.wait(60) == 0
    finally:
        for p in (pub, sub):
            if p.poll() is None:
                p.kill()
                p.wait()
    r = json.loads(out.read_text())
    ages = np.array(r["ages"])
    print(encoding, "frames", len(ages), "age p50/p99", np.percentile(ages, [50, 99]), r["stats"])
    assert len(ages) >= 5, r
    assert r["seqs"] == sorted(r["seqs"])
    # Newest only: age does not grow with time although the link is slower than the source.
    third = len(ages) // 3
    assert np.median(ages[-third:]) < np.median(ages[:third]) * 2 + 0.5, ages
    assert np.percentile(ages, 99) < 4.0, ages  # unbounded queueing: > 8 s in 10 s


def test_bridge_carries_zenoh_frames_into_a_local_channel():
    port = free_port()
    topic = f"pytest/zenoh/bridge/{port}"
    name = f"pytest-zbridge-{os.getpid()}-{port}"
    bridge = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "framebus",
            "bridge",
            "--from",
            f"zenoh:{topic}",
            "--to",
            f"channel:{name}",
            "--mode",
            "lossless",
            "-n",
            "4",
            "-q",
            "--config",
            json.dumps(listen_cfg(port)),
        ]
    )
    try:
        local = framebus.Subscriber(name, timeout=20)
        p = start_publisher(topic, port, count=4, w=128, h=64)
        try:
            for k in range(4):
                f = local.recv(timeout=20)
                assert np.array_equal(np.asarray(f), pattern(k, (64, 128, 4)))
                del f
        finally:
            reap(p)
        assert bridge.wait(20) == 0
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()


def test_a_blocked_recv_obeys_ctrl_c(link):
    from signals import alarm

    sub, _, _ = link

    def interrupt():
        raise KeyboardInterrupt

    t = time.monotonic()
    with alarm(interrupt, 0.2), pytest.raises(KeyboardInterrupt):
        sub.recv(timeout=None)
    assert time.monotonic() - t < 1.0
