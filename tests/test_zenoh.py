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
import subprocess
import sys
import time

import framebus
import numpy as np
import pytest
from framebus import zenoh as fz
from zenoh_env import (
    PATTERN,
    QUIET,
    Link,
    child,
    connect_cfg,
    fds,
    free_port,
    listen_cfg,
    pattern,
    read_line,
    reap,
    recv_frames,
    release,
    router_cfgs,
    rss,
    smooth,
    start_publisher,
    wait_until,
)


@pytest.fixture
def link():
    """A subscriber listening on a free port (over Zenoh even from this host), and a key."""
    port = free_port()
    key = f"pytest/zenoh/{os.getpid()}/{port}"
    sub = fz.Subscriber(key, config=listen_cfg(port), local=False)
    yield sub, key, port
    sub.close()


def test_lossless_frames_arrive_pixel_exact_in_order_across_processes(link):
    sub, key, port = link
    n = 60
    p = start_publisher(key, port, count=n, w=640, h=480)
    try:
        assert recv_frames(sub, n, (480, 640, 4)) == list(range(1, n + 1))
        release(p)
        with pytest.raises(framebus.ChannelClosed):
            sub.recv(timeout=20)
    finally:
        reap(p)
    s = sub.stats()
    assert s["received"] == n and s["skipped"] == 0 and s["bad"] == 0 and s["local"] == 0
    assert s["rebased"] == 0, s  # one host: timestamps kept as sent
    assert s["slot_bytes"] == n * 640 * 480 * 4


@pytest.mark.parametrize("encoding", ["raw", "lz4", "zstd", "jpeg"])
def test_every_encoding_round_trips(link, encoding):
    sub, key, port = link
    p = start_publisher(key, port, encoding=encoding, count=3, w=1920, h=1080)
    try:
        if encoding != "jpeg":
            assert recv_frames(sub, 3, (1080, 1920, 4)) == [1, 2, 3]
        for k in range(3 if encoding == "jpeg" else 0):
            a = np.asarray(sub.recv(timeout=20))
            want = smooth(k, 1080, 1920).astype(np.float64)
            mse = np.mean((a.astype(np.float64) - want) ** 2)
            psnr = 10 * np.log10(255.0**2 / max(mse, 1e-9))
            assert psnr > 35, psnr
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


PLAIN_PUBLISH = """
import json, sys, time, zenoh
s = zenoh.open(zenoh.Config.from_json5(json.dumps(cfg)))
pub = s.declare_publisher(key, congestion_control=zenoh.CongestionControl.BLOCK)
while not pub.matching_status.matching:
    time.sleep(0.01)
for k, payload in enumerate(payloads):
    if payload is None:
        a = pattern(k, (90, 160, 4))
        meta = {"framebus": 1, "width": 160, "height": 90, "stride": 640, "format": "BGRA",
                "timestamp_ns": time.monotonic_ns(), "seq": k + 1, "encoding": "raw",
                "mode": "lossless"}  # queue every frame (absent: keep the newest)
        pub.put(a.tobytes(), attachment=json.dumps(meta).encode())
    else:
        data, att = payload
        pub.put(data, attachment=att)
    if step:
        sys.stdin.readline()  # one at a time: the test took the last one
sys.stdin.readline()  # closing the session drops what Zenoh has not sent yet
s.close()
"""


OTHER_HOST_PUBLISH = """
import json, sys, time, numpy as np
from framebus import zenoh as fz
pub = fz.Publisher(key, config=cfg, mode="lossless")  # local=True: offers its channel
pub.wait_for_subscribers(1, timeout=30)
stamps = []
for k in range(count):
    f = pub.acquire(64, 48, "BGRA")
    np.asarray(f)[...] = pattern(k, (48, 64, 4))
    stamps.append(f.timestamp)  # this side's CLOCK_MONOTONIC
    pub.send(f)
    del f
    time.sleep(0.02)
print(json.dumps(stamps), flush=True)
sys.stdin.readline()
pub.close()
"""

BOOTED_EARLIER_S = 100_000  # the publisher's "host" booted ~28 hours before this one


def test_timestamps_from_another_host_are_ages_on_this_one():
    """A publisher whose CLOCK_MONOTONIC runs 100 000 s ahead (a time namespace: a host
    booted earlier, the same wall clock): each frame's timestamp is re-based onto this
    host's monotonic clock through the attachment's `unix_ns`, so `monotonic_ns() -
    timestamp` is the frame's age here too; the sender's own stamps are 1e14 ns away.
    Both ends have `local=True`: another time namespace is not "this host" for the local
    channel (its timestamps would be the sender's clock), so frames come over Zenoh."""
    if subprocess.run(["unshare", "--time", "--fork", "true"], capture_output=True).returncode:
        pytest.skip("no time namespaces here (unshare --time needs root and CONFIG_TIME_NS)")
    port = free_port()
    key = f"pytest/zenoh/{os.getpid()}/timens"
    sub = fz.Subscriber(key, config=listen_cfg(port))
    n = 20
    p = child(
        OTHER_HOST_PUBLISH,
        monotonic_offset=BOOTED_EARLIER_S,
        key=key,
        cfg=connect_cfg(port),
        count=n,
    )
    try:
        ages, stamps = [], []
        for _ in range(n):
            f = sub.recv(timeout=20)
            ages.append(time.monotonic_ns() - f.timestamp)
            stamps.append(f.timestamp)
            assert np.array_equal(np.asarray(f), pattern(f.seq - 1, (48, 64, 4)))
            del f
        sent = read_line(p)
        assert sub.route == "zenoh"
        s = sub.stats()
    finally:
        reap(p)
        sub.close()
    # Ages: received within a second of their capture (a loaded machine included).
    assert all(0 <= a < 1_000_000_000 for a in ages), ages
    # The sender's stamps are its own clock: 100 000 s ahead of ours, to within that.
    skew = [(s - r) / 1e9 for s, r in zip(sent, stamps)]
    assert all(abs(d - BOOTED_EARLIER_S) < 1.0 for d in skew), skew
    assert s["rebased"] == s["received"] == n and s["local"] == 0, s


def test_plain_zenoh_publisher_feeds_framebus_subscriber(link):
    # It once failed on a loaded machine: the plain publisher closed its session 0.5 s
    # after its puts, and a put only queues (closing drops what is still queued). The
    # publisher now waits until the frames are here.
    pytest.importorskip("zenoh")
    sub, key, port = link
    p = child(PLAIN_PUBLISH, key=key, cfg=connect_cfg(port), payloads=[None] * 4, step=False)
    try:
        # A plain publisher has no liveliness token: frames arrive, no ChannelClosed.
        assert recv_frames(sub, 4, (90, 160, 4)) == [1, 2, 3, 4]
        assert sub.publishers == 0
    finally:
        reap(p)


def test_a_sample_that_is_not_a_frame_is_refused_naming_why(link):
    pytest.importorskip("zenoh")
    sub, key, port = link
    bad_size = json.dumps(
        {"framebus": 1, "width": 4, "height": 4, "format": "BGRA", "encoding": "raw"}
    ).encode()
    # No "mode" in the attachment: latest, so one at a time.
    payloads = [(b"hello", None), (b"x" * 10, bad_size)]
    p = child(PLAIN_PUBLISH, key=key, cfg=connect_cfg(port), payloads=payloads, step=True)
    try:
        with pytest.raises(framebus.FramebusError, match="no attachment"):
            sub.recv(timeout=20)
        release(p)
        with pytest.raises(framebus.FramebusError, match="raw payload has 10 bytes"):
            sub.recv(timeout=20)
        release(p)
    finally:
        reap(p)
    assert sub.stats()["bad"] == 2


@pytest.mark.parametrize("local", [False, True], ids=["zenoh", "local"])
def test_kill_9_publisher_raises_channel_closed_promptly_and_a_new_one_recovers(local):
    port = free_port()
    key = f"pytest/zenoh/kill/{os.getpid()}/{port}"
    with fz.Subscriber(key, config=listen_cfg(port), local=local) as sub:
        for round_ in range(2):
            p = start_publisher(key, port, mode="latest", count=None, period=0.01, local=local)
            try:
                for _ in range(5):
                    sub.recv(timeout=20)
                wait_until(lambda: sub.route == ("local" if local else "zenoh"), what="route")
                assert sub.publishers == 1
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
                t = time.monotonic()
                with pytest.raises(framebus.ChannelClosed, match="publisher closed or gone"):
                    while True:
                        sub.recv(timeout=15)
                waited = time.monotonic() - t
                assert waited < 2.0, f"round {round_}: ChannelClosed after {waited:.2f} s"
                assert sub.route == "zenoh"  # back on Zenoh, waiting for a publisher
            finally:
                reap(p, ok=False)
        if local:
            assert sub.stats()["local"] >= 5


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


INIT_LOG = """
import sys
from framebus import zenoh as fz
try:
    fz.init_log("loud")
except ValueError as e:
    print("refused:", e, flush=True)
fz.init_log(sys.argv[1])
cfg = {"mode": "peer", "listen": {"endpoints": ["tcp/127.0.0.1:0"]}, "scouting": %r}
fz.Publisher("log/test", config=cfg).close()
"""


@pytest.mark.parametrize(
    ("level", "rust_log", "shown"),
    [("debug", None, True), ("debug", "off", False), ("error", None, False)],
)
def test_init_log_prints_zenohs_own_log_to_stderr(level, rust_log, shown):
    """framebus.zenoh.init_log: Zenoh's tracing events on stderr (not stdout, where
    zenoh's own init_log_from_env_or writes) at the level asked for, RUST_LOG overriding
    it when set; an unknown level is refused naming it."""
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    if rust_log:
        env["RUST_LOG"] = rust_log
    r = subprocess.run(
        [sys.executable, "-c", INIT_LOG % (QUIET,), level],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert 'refused: invalid level="loud"' in r.stdout and "trace, debug, info" in r.stdout, (
        r.stdout
    )
    assert "zenoh::" not in r.stdout, r.stdout[:2000]  # stdout stays the program's
    assert "\x1b[" not in r.stderr  # no colour codes into a pipe
    lines = [ln for ln in r.stderr.splitlines() if "zenoh::" in ln]
    if shown:  # e.g. "... DEBUG ThreadId(01) zenoh::net::runtime: Zenoh Rust API v1.10.2"
        assert any("DEBUG" in ln for ln in lines), r.stderr[-2000:]
    else:
        assert not lines, r.stderr[-2000:]


def test_init_log_names_a_rust_log_it_cannot_parse():
    code = "from framebus import zenoh as fz\ntry:\n    fz.init_log()\nexcept ValueError as e:\n    print(e)"
    env = {**os.environ, "RUST_LOG": "zenoh=loud"}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert 'invalid RUST_LOG="zenoh=loud"' in r.stdout, (r.stdout, r.stderr)


def test_fds_and_rss_stay_flat_over_10000_frames(link):
    sub, key, port = link
    n = 10_000
    p = start_publisher(key, port, count=n, w=160, h=120)
    try:
        for _ in range(1000):
            sub.recv(timeout=20)
        fds0, rss0 = fds(), rss()
        for _ in range(n - 1000):
            f = sub.recv(timeout=20)
            del f
        grew = rss() - rss0
        assert fds() == fds0
        assert grew < 8 << 20, f"RSS grew {grew} bytes over {n - 1000} frames"
        # A leak grows with the frame count; what may remain is the subscriber's own
        # hand-off (frames arrived after the last recv or being decoded): a few slots.
        assert sub.pool.stats()["slots_in_use"] <= 4, sub.pool.stats()
    finally:
        reap(p, timeout=60)


def test_latest_mode_hands_over_only_the_newest(link):
    sub, key, port = link
    p = start_publisher(key, port, mode="latest", count=50, w=256, h=256)
    try:
        pub_stats = read_line(p)  # all 50 sent, none taken
        # Each older frame was replaced once: in the publisher's mailbox (before Zenoh)
        # or in the subscriber's queue (after); wait until the last one is here.
        wait_until(lambda: pub_stats["replaced"] + sub.stats()["skipped"] >= 49, what="frame 50")
        f = sub.recv(timeout=5)
        assert f.seq == 50
        assert sub.try_recv() is None
        assert pub_stats["replaced"] + sub.stats()["skipped"] == 49
    finally:
        reap(p)


def test_closed_subscriber_raises_and_iteration_ends(link):
    sub, key, port = link
    p = start_publisher(key, port, count=3)
    try:
        got = []
        for f in sub:  # ends with the publisher's close
            got.append(f.seq)
            if len(got) == 3:
                release(p)
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
    server = listen_cfg(port)
    server["listen"]["endpoints"] = [f"tls/127.0.0.1:{port}"]
    server["transport"] = {
        "link": {
            "tls": {
                "listen_private_key": str(key),
                "listen_certificate": str(cert),
                "root_ca_certificate": str(ca),
            }
        },
        "auth": {"usrpwd": {"user": "viewer", "password": "v1ew", "dictionary_file": str(creds)}},
    }

    def client(password, proto="tls"):
        c = connect_cfg(port)
        c["connect"]["endpoints"] = [f"{proto}/127.0.0.1:{port}"]
        c["transport"] = {
            "link": {"tls": {"root_ca_certificate": str(ca)}},
            "auth": {"usrpwd": {"user": "camera", "password": password}},
        }
        return c

    with fz.Subscriber(topic, config=server, local=False) as sub:
        for bad in (client("wrong"), client("s3cret", proto="tcp")):
            p = start_publisher(topic, bad, count=3, w=32, h=32)
            with pytest.raises(TimeoutError):
                sub.recv(timeout=4)
            reap(p, ok=False, timeout=0.1)
            assert sub.publishers == 0
        p = start_publisher(topic, client("s3cret"), count=3, w=32, h=32)
        try:
            assert recv_frames(sub, 3, (32, 32, 4)) == [1, 2, 3]
        finally:
            reap(p)


def test_frames_go_through_a_router_between_two_clients():
    zenoh = pytest.importorskip("zenoh")
    port = free_port()
    topic = f"pytest/zenoh/router/{port}"
    router_cfg, client = router_cfgs(port)
    with (
        zenoh.open(zenoh.Config.from_json5(json.dumps(router_cfg))),
        fz.Subscriber(topic, config=client, local=False) as sub,
    ):
        p = start_publisher(topic, client, encoding="lz4", count=5, w=200, h=100)
        try:
            assert recv_frames(sub, 5, (100, 200, 4)) == [1, 2, 3, 4, 5]
            release(p)
            with pytest.raises(framebus.ChannelClosed):
                sub.recv(timeout=20)
        finally:
            reap(p)


def test_a_publisher_counts_its_subscribers_like_the_local_channel():
    """`subscribers` and `wait_for_subscribers(n)` count framebus subscribers (by their
    liveliness tokens; a wildcard one, and one that reads through the local channel,
    included); with only a plain Zenoh subscriber the count is 1 (Zenoh says "any"); a
    wait for more than there are times out naming both numbers."""
    zenoh = pytest.importorskip("zenoh")
    port = free_port()
    topic = f"pytest/zenoh/count/{os.getpid()}/{port}"
    router_cfg, client = router_cfgs(port)
    with (
        zenoh.open(zenoh.Config.from_json5(json.dumps(router_cfg))) as router,
        fz.Publisher(topic, config=client, mode="lossless") as pub,
    ):
        assert pub.subscribers == 0
        with pytest.raises(TimeoutError, match=r"waiting for 1 subscribers \(0 now\)"):
            pub.wait_for_subscribers(1, timeout=0.2)
        plain = router.declare_subscriber(topic)
        assert pub.wait_for_subscribers(1, timeout=10) == 1
        wild = topic.rsplit("/", 1)[0] + "/*"
        with (
            fz.Subscriber(topic, config=client) as a,
            fz.Subscriber(wild, config=client, local=False) as b,
        ):
            assert pub.wait_for_subscribers(2, timeout=10) == 2
            for k in range(60):  # `a` moves to the publisher's local channel
                f = pub.acquire(64, 48, "BGRA")
                np.asarray(f)[...] = pattern(k, (48, 64, 4))
                pub.send(f)
                del f
                assert a.recv(timeout=10).seq == b.recv(timeout=10).seq == k + 1
                if a.route == "local":
                    break
            assert a.route == "local" and b.route == "zenoh"
            assert pub.subscribers == 2
            with pytest.raises(TimeoutError, match=r"waiting for 3 subscribers \(2 now\)"):
                pub.wait_for_subscribers(3, timeout=0.3)
        wait_until(lambda: pub.subscribers == 1, what="the plain subscriber alone")
        plain.undeclare()
        wait_until(lambda: pub.subscribers == 0, what="no subscriber")


def test_same_host_frames_take_the_local_channel_and_plain_subscribers_still_get_them():
    """Publisher and subscriber of one host (both local=True, the default): after the
    first frames the subscriber reads the publisher's own slots through framebus's
    channel (its Zenoh subscription withdrawn), so the pixels no longer cross the loopback
    for it; a plain zenoh-python subscriber on the same key still gets every frame over
    Zenoh. Then, with no plain subscriber, the publisher stops putting frames at all."""
    zenoh = pytest.importorskip("zenoh")
    port = free_port()
    topic = f"pytest/zenoh/local/{os.getpid()}/{port}"
    router_cfg, client = router_cfgs(port)
    n, shape = 40, (240, 320, 4)
    with zenoh.open(zenoh.Config.from_json5(json.dumps(router_cfg))) as router:
        plain = router.declare_subscriber(topic)
        with fz.Subscriber(topic, config=client) as sub:
            p = start_publisher(topic, client, count=n, w=320, h=240, local=True)
            try:
                assert recv_frames(sub, n, shape) == list(range(1, n + 1))
                assert sub.route == "local"
                pub_stats = read_line(p)
                release(p)
                with pytest.raises(framebus.ChannelClosed):
                    sub.recv(timeout=20)
                assert sub.route == "zenoh"  # the publisher left: back on Zenoh
            finally:
                reap(p)
            s = sub.stats()
            over_zenoh = s["received"] - s["local"]
            assert s["local"] >= n - 10, s
            # Frames from the channel were not copied: only Zenoh's went into slots.
            assert s["slot_bytes"] == over_zenoh * 320 * 240 * 4, s
            assert pub_stats["local"] >= s["local"]
            # The plain subscriber got every frame over Zenoh, pixel-exact, in order.
            for k in range(n):
                sample = plain.recv()
                meta = json.loads(sample.attachment.to_bytes())
                assert meta["seq"] == k + 1
                a = np.frombuffer(sample.payload.to_bytes(), np.uint8).reshape(shape)
                assert np.array_equal(a, pattern(k, shape))
            plain.undeclare()
            # Without the plain subscriber nobody but the local one wants frames: after
            # the switch the publisher neither encodes nor puts them.
            p = start_publisher(topic, client, count=n, w=320, h=240, local=True, encoding="lz4")
            try:
                assert recv_frames(sub, n, shape) == list(range(1, n + 1))
                pub_stats = read_line(p)
            finally:
                reap(p)
            s2 = sub.stats()
            assert s2["local"] - s["local"] >= n - 10, s2
            over_zenoh = (s2["received"] - s["received"]) - (s2["local"] - s["local"])
            assert pub_stats["sent"] <= over_zenoh + 4, (pub_stats, s2)


def test_bridge_carries_zenoh_frames_into_a_local_channel():
    port = free_port()
    topic = f"pytest/zenoh/bridge/{port}"
    name = f"pytest-zbridge-{os.getpid()}-{port}"
    argv = [sys.executable, "-m", "framebus", "bridge", "--from", f"zenoh:{topic}"]
    argv += ["--to", f"channel:{name}", "--mode", "lossless", "-n", "4", "-q"]
    bridge = subprocess.Popen([*argv, "--config", json.dumps(listen_cfg(port))])
    try:
        local = framebus.Subscriber(name, timeout=20)
        p = start_publisher(topic, port, count=4, w=128, h=64)
        try:
            assert recv_frames(local, 4, (64, 128, 4)) == [1, 2, 3, 4]
        finally:
            reap(p)
        assert bridge.wait(20) == 0
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()


@pytest.mark.parametrize("local", [False, True], ids=["zenoh", "local"])
def test_a_waiting_recv_sleeps_rather_than_spins(local):
    # A recv with nothing to take once spun (a flag only the local route consumes kept
    # its wait from sleeping): it burnt a core and halved loopback throughput.
    port = free_port()
    with fz.Subscriber(f"pytest/zenoh/idle/{port}", config=listen_cfg(port), local=local) as sub:
        cpu = time.thread_time()
        with pytest.raises(TimeoutError):
            sub.recv(timeout=0.5)
        assert time.thread_time() - cpu < 0.1


def test_a_blocked_recv_obeys_ctrl_c(link):
    from signals import alarm

    sub, _, _ = link

    def interrupt():
        raise KeyboardInterrupt

    t = time.monotonic()
    with alarm(interrupt, 0.2), pytest.raises(KeyboardInterrupt):
        sub.recv(timeout=None)
    assert time.monotonic() - t < 1.0


def test_a_lossless_send_blocked_by_backpressure_obeys_ctrl_c(link):
    # The subscriber never calls recv: its queue fills, Zenoh stops reading the link,
    # TCP pushes back, the publisher's put blocks, then its sender queue fills and
    # send waits. A real SIGINT must raise KeyboardInterrupt there within ~1 s (the
    # put once ran on the caller's thread, unbounded: up to Zenoh's 5 s).
    import threading

    from signals import time_limit

    sub, key, port = link
    with fz.Publisher(key, config=connect_cfg(port), mode="lossless", local=False) as pub:
        pub.wait_for_subscribers(1, timeout=10)
        frame = pub.acquire(1920, 1080, "BGRA")
        np.asarray(frame)[:] = 7
        returned = [time.monotonic()]
        sent_at = []

        def interrupt():
            # Once no send has returned for 0.5 s, the caller is blocked.
            while time.monotonic() - returned[-1] < 0.5:
                time.sleep(0.05)
            sent_at.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

        t = threading.Thread(target=interrupt, daemon=True)
        t.start()
        with time_limit(20), pytest.raises(KeyboardInterrupt):
            while True:
                pub.send(frame)
                returned.append(time.monotonic())
        late = time.monotonic() - sent_at[0]
        t.join(5)
        sub.close()  # the link goes: the blocked put returns and the publisher closes at once
        assert len(returned) > 3  # frames went out before the link filled
        assert late < 1.0, f"KeyboardInterrupt {late:.2f} s after SIGINT"


# ---------------------------------------------------------------- a real (capped) link


@pytest.fixture
def capped_link():
    """Two network namespaces joined by a veth pair, capped to 100 Mbit/s (zenoh_env.Link);
    removed afterwards. Needs root and iproute2."""
    if os.geteuid() != 0 or subprocess.run(["which", "tc"], capture_output=True).returncode:
        pytest.skip("needs root and iproute2 (ip, tc)")
    link = Link()
    try:
        link.up_()
    except subprocess.CalledProcessError as e:
        link.down_()
        pytest.skip(f"cannot make network namespaces here: {e.stderr.strip()}")
    yield link
    link.down_()


SUBSCRIBE = """
import json, time
from framebus import ChannelClosed, zenoh as fz
sub = fz.Subscriber(key, config=cfg)
print(json.dumps("ready"), flush=True)
ages, seqs, closed, end = [], [], 0, time.monotonic() + duration
while time.monotonic() < end and closed < max_closed:
    try:
        f = sub.recv(timeout=0.5)
    except TimeoutError:
        continue
    except ChannelClosed:
        closed += 1
        seqs.append(-1)
        continue
    ages.append((time.monotonic_ns() - f.timestamp) / 1e9)
    seqs.append(f.seq)
    if check:
        assert (np.asarray(f) == pattern(f.seq - 1, (f.height, f.width, 4))).all(), f.seq
    del f
print(json.dumps({"ages": ages, "seqs": seqs, "stats": sub.stats()}), flush=True)
"""

CAPPED_PUBLISH = (
    PATTERN
    + """
import json, sys, time, numpy as np
from framebus import zenoh as fz
pub = fz.Publisher(key, config=cfg, mode=mode, encoding=encoding, quality=quality)
pub.wait_for_subscribers(1, timeout=30)
end, k, t0 = time.monotonic() + duration, 0, time.monotonic()
while time.monotonic() < end and (count is None or k < count):
    f = pub.acquire(w, h, "BGRA")
    np.asarray(f)[...] = smooth(k, h, w) if encoding == "jpeg" else pattern(k, (h, w, 4))
    pub.send(f)
    del f
    k += 1
    time.sleep(period)
print(json.dumps({"stats": pub.stats(), "made": k, "secs": time.monotonic() - t0}), flush=True)
sys.stdin.readline()
pub.close()
"""
)


def _capped(
    link,
    *,
    mode="latest",
    encoding="raw",
    quality=None,
    w=1920,
    h=1080,
    period=1 / 30,
    duration=10.0,
    count=None,
    sub_duration=14.0,
    max_closed=1,
    check=False,
):
    """Start a subscriber on the link's far side, then a publisher; returns both processes."""
    key = "pytest/zenoh/capped"
    sub = child(
        SUBSCRIBE,
        netns=link.sub_ns,
        key=key,
        cfg=listen_cfg(link.SUB_PORT, host=link.SUB_ADDR),
        duration=sub_duration,
        max_closed=max_closed,
        check=check,
    )
    assert read_line(sub) == "ready"
    pub = child(
        CAPPED_PUBLISH,
        netns=link.pub_ns,
        key=key,
        cfg=connect_cfg(link.port, host=link.SUB_ADDR),
        mode=mode,
        encoding=encoding,
        quality=quality,
        w=w,
        h=h,
        period=period,
        duration=duration,
        count=count,
    )
    return pub, sub


@pytest.mark.parametrize("encoding", ["jpeg", "raw"])
def test_latest_mode_keeps_age_bounded_on_a_capped_link(capped_link, encoding):
    pub, sub = _capped(capped_link, encoding=encoding, quality=80 if encoding == "jpeg" else None)
    try:
        read_line(pub)
        release(pub)
        r = read_line(sub)
    finally:
        reap(pub, timeout=30)
        reap(sub, timeout=30)
    ages = np.array(r["ages"])
    print(encoding, "frames", len(ages), "age p50/p99", np.percentile(ages, [50, 99]), r["stats"])
    assert len(ages) >= 5, r
    # Every frame crossed the link: none younger than its 20 ms delay.
    assert ages.min() >= capped_link.DELAY_S, (capped_link.qdisc, ages.min())
    seqs = [s for s in r["seqs"] if s > 0]
    assert seqs == sorted(seqs)
    # Newest only: age does not grow with time although the link is slower than the source.
    third = len(ages) // 3
    assert np.median(ages[-third:]) < np.median(ages[:third]) * 2 + 0.5, ages
    assert np.percentile(ages, 99) < 4.0, ages  # unbounded queueing: > 8 s in 10 s


@pytest.mark.parametrize("mode", ["lossless", "latest"])
def test_link_down_then_up_both_sides_recover(capped_link, mode):
    """The veth goes down mid-stream for 3 s (shorter than Zenoh's 10 s lease: the session
    survives) and comes back: the publisher is not stuck, frames resume — lossless: every
    frame, in order, pixel-exact; latest: newest-only with the age back to normal."""
    lossless = mode == "lossless"
    pub, sub = _capped(
        capped_link,
        mode=mode,
        w=320,
        h=240,
        period=0.02,
        duration=12.0,
        count=300 if lossless else None,
        sub_duration=25.0 if lossless else 14.0,
        check=True,
    )
    try:
        time.sleep(3.0)  # the link's timing is what is tested: frames flow meanwhile
        capped_link.set_link(False)
        time.sleep(3.0)
        capped_link.set_link(True)
        p = read_line(pub)
        release(pub)
        r = read_line(sub)
    finally:
        reap(pub, timeout=30)
        reap(sub, timeout=60)
    seqs, ages = r["seqs"], np.array(r["ages"])
    print(mode, "frames", len(seqs), "publisher", p, "age max", ages.max(), r["stats"])
    assert seqs[-1] == -1, "no ChannelClosed after the publisher's close"
    seqs = seqs[:-1]
    assert -1 not in seqs, "ChannelClosed while the link was down for less than the lease"
    if lossless:
        # Every frame handed to send (300, or fewer if the 12 s ran out first),
        # also those still queued when the stats were printed: close delivers them.
        made = p["made"]
        assert made >= 150 and seqs == list(range(1, made + 1)), (made, seqs)
    else:
        made = p["stats"]["sent"] + p["stats"]["replaced"]
        assert seqs == sorted(seqs) and seqs[-1] >= made - 5, (made, seqs)  # up to the end
        assert np.percentile(ages[-50:], 99) < 1.0, ages[-50:]  # caught up after the outage
    assert ages.max() < 8.0, ages.max()


LEASE_MS = 3000  # Zenoh's link lease for the long-outage test (its default is 10 000)

LEASE_SUBSCRIBE = """
import json, time
from framebus import ChannelClosed, zenoh as fz
sub = fz.Subscriber(key, config=cfg)
print(json.dumps("ready"), flush=True)
events, closed, end = [], 0, time.monotonic() + duration
while time.monotonic() < end and closed < max_closed:
    try:
        f = sub.recv(timeout=0.2)
    except TimeoutError:
        continue
    except ChannelClosed:
        closed += 1
        events.append([time.monotonic(), -1])
        continue
    assert (np.asarray(f) == pattern(f.seq - 1, (f.height, f.width, 4))).all(), f.seq
    events.append([time.monotonic(), f.seq])
    del f
print(json.dumps({"events": events, "stats": sub.stats()}), flush=True)
"""

LEASE_PUBLISH = """
import json, sys, time, numpy as np
import framebus
from framebus import zenoh as fz
pool = framebus.FramePool()  # its own: slots_in_use counts only this publisher's frames
pub = fz.Publisher(key, config=cfg, mode=mode, pool=pool)
pub.wait_for_subscribers(1, timeout=30)
end, k, errors = time.monotonic() + duration, 0, []
while time.monotonic() < end:
    f = pub.acquire(w, h, "BGRA")
    np.asarray(f)[...] = pattern(k, (h, w, 4))
    try:
        pub.send(f)
    except Exception as e:
        errors.append([time.monotonic(), repr(e)])
    del f
    k += 1
    time.sleep(period)
t = time.monotonic()
while pool.stats()["slots_in_use"] and time.monotonic() < t + 5:
    time.sleep(0.01)
print(json.dumps({"stats": pub.stats(), "pool": pool.stats(), "errors": errors,
                  "made": k, "slots_wait": time.monotonic() - t}), flush=True)
sys.stdin.readline()
pub.close()
"""


@pytest.mark.parametrize("mode", ["latest", "lossless"])
def test_link_down_longer_than_the_lease_closes_then_recovers(capped_link, mode):
    """The veth goes down for 5 s, longer than Zenoh's link lease (set to 3 s in both
    configurations to keep the test short; 10 s by default): the session ends, the
    subscriber raises ChannelClosed once during the outage, and when the link comes back
    the publisher re-connects by itself and frames resume pixel-exact; the publisher's
    slots all return to its pool."""
    lease = {"link": {"tx": {"lease": LEASE_MS}}}
    key = "pytest/zenoh/lease"
    sub = child(
        LEASE_SUBSCRIBE,
        netns=capped_link.sub_ns,
        key=key,
        cfg={**listen_cfg(capped_link.SUB_PORT, host=capped_link.SUB_ADDR), "transport": lease},
        duration=17.0,
        max_closed=4,
    )
    pub = None
    try:
        assert read_line(sub) == "ready"
        pub = child(
            LEASE_PUBLISH,
            netns=capped_link.pub_ns,
            key=key,
            cfg={**connect_cfg(capped_link.port, host=capped_link.SUB_ADDR), "transport": lease},
            mode=mode,
            w=320,
            h=240,
            period=0.02,
            duration=14.0,
        )
        time.sleep(3.0)  # frames flow
        down = time.monotonic()
        capped_link.set_link(False)
        time.sleep(5.0)
        capped_link.set_link(True)
        up = time.monotonic()
        p = read_line(pub)
        release(pub)
        r = read_line(sub)
    finally:
        if pub is not None:
            reap(pub, timeout=30)
        reap(sub, timeout=30)
    ev = r["events"]
    closes = [t for t, s in ev if s == -1]
    frames = [(t, s) for t, s in ev if s != -1]
    print(mode, "publisher", p, "subscriber", r["stats"])
    print(
        mode, "ChannelClosed at", [round(t - down, 2) for t in closes], "s after the link went down"
    )
    # The session ends when the lease runs out, while the link is still down: one
    # ChannelClosed then (and one for the publisher's close at the end, below).
    assert closes and down + LEASE_MS / 1000 - 0.5 < closes[0] < up, (closes, down, up)
    before = [s for t, s in frames if t < closes[0]]
    after = [(t, s) for t, s in frames if t > closes[0]]
    assert len(before) >= 20, before
    assert p["errors"] == [] and p["stats"]["errors"] == 0, p
    # Nothing leaks: every frame Zenoh held for the dead session came back to the pool.
    assert p["pool"]["slots_in_use"] == 0, p["pool"]
    last = [s for _, s in after]
    put_after = p["stats"]["sent"] - len(before) - len(after)
    stalled = not last or (last[-1] < p["made"] - 5 and len(after) < 50)
    # The stall of docs/zenoh.md ("Known gaps"), ~1 run in 30 before framebus kept a
    # blocked put's wait below a short lease: Zenoh re-connected (the subscriber saw the
    # publisher's token come back, and never saw it go at the close) and the publisher
    # put frames to a matched subscriber, yet none reached the subscriber.
    assert not stalled, (
        f"frames stalled: {len(after)} after the link came back, {put_after} put that "
        f"never arrived, publishers seen {r['stats']['publishers']}"
    )
    assert len(closes) == 2 and closes[-1] > frames[-1][0], ev
    # Nothing between that close and the link's return; then the publisher re-connects by
    # itself (Zenoh retries its connect endpoint) and frames resume.
    assert after and after[0][0] > up, after[:3]
    resumed = after[0][0] - up
    print(
        mode, "first frame", round(resumed, 2), "s after the link came back;", len(after), "after"
    )
    assert resumed < 5.0, resumed
    seqs = before + last  # pixel-exact: checked by the subscriber
    assert seqs == sorted(set(seqs)), seqs
    if mode == "lossless":  # every frame once the new session is there, in order
        assert last == list(range(last[0], p["made"] + 1)), (last, p["made"])
    else:
        assert last[-1] >= p["made"] - 5, (last[-1], p["made"])


def test_kill_9_subscriber_the_publisher_goes_on_and_a_new_subscriber_gets_frames(tmp_path):
    """A subscriber process killed with SIGKILL mid-stream (lossless, so a stuck link would
    block the publisher): the publisher keeps sending, its slots all come back to its
    pool, and a new subscriber gets frames."""
    port = free_port()
    key = f"pytest/zenoh/subkill/{os.getpid()}/{port}"
    code = """
    import json
    from framebus import zenoh as fz
    sub = fz.Subscriber(key, config=cfg, local=False)
    for _ in range(n):
        sub.recv(timeout=20)
    print(json.dumps("got"), flush=True)
    while True:  # receiving when it is killed
        sub.recv(timeout=20)
    """
    # A pool of its own: the default pool also holds frames other tests left behind.
    pool = framebus.FramePool()
    with fz.Publisher(key, config=listen_cfg(port), mode="lossless", local=False, pool=pool) as pub:
        for round_ in range(2):
            sub = child(code, key=key, cfg=connect_cfg(port), n=5)
            pub.wait_for_subscribers(1, timeout=20)
            sent = 0
            # Send until the child has its 5 frames, then kill it mid-stream.
            while sub.poll() is None:
                f = pub.acquire(640, 480)
                np.asarray(f)[...] = pattern(sent, (480, 640, 4))
                pub.send(f)
                del f
                sent += 1
                if sent == 20:
                    assert read_line(sub) == "got"
                    os.kill(sub.pid, signal.SIGKILL)
                    sub.wait()
            # The publisher goes on (a dead link must not block a lossless send for long),
            # and every slot comes back once Zenoh has dropped its messages.
            t = time.monotonic()
            for _ in range(50):
                f = pub.acquire(640, 480)
                pub.send(f)
                del f
            assert time.monotonic() - t < 10, "sends blocked after the subscriber died"
            # Zenoh drops the dead link's queue (holding leases of the frames in it) when it
            # notices the link is gone.
            try:
                wait_until(lambda: pool.stats()["slots_in_use"] == 0, what="slots back")
            except AssertionError as e:
                raise AssertionError(f"{e}: pool {pool.stats()}, {pub.stats()}") from None
            reap(sub, ok=False)
            assert pub.stats()["errors"] == 0, round_
        # A new subscriber gets frames.
        with fz.Subscriber(key, config=connect_cfg(port), local=False) as again:
            pub.wait_for_subscribers(1, timeout=20)
            f = pub.acquire(640, 480)
            np.asarray(f)[...] = pattern(7, (480, 640, 4))
            pub.send(f)
            g = again.recv(timeout=20)
            assert np.array_equal(np.asarray(g), pattern(7, (480, 640, 4)))
