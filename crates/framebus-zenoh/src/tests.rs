//! End-to-end tests: two Zenoh sessions in this process over loopback TCP
//! (real Zenoh, no mocks). Cross-process, interop and crash tests are in
//! tests/test_zenoh.py.

use crate::*;
use framebus_core::{Frame, PixelFormat};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const QUIET: &str = r#"scouting: {multicast: {enabled: false}, gossip: {enabled: false}}"#;

fn listen(port: u16) -> ConfigSource {
    ConfigSource::Json5(format!(
        r#"{{mode: "peer", listen: {{endpoints: ["tcp/127.0.0.1:{port}"]}}, {QUIET}}}"#
    ))
}

fn connect(port: u16) -> ConfigSource {
    ConfigSource::Json5(format!(
        r#"{{mode: "peer", connect: {{endpoints: ["tcp/127.0.0.1:{port}"]}}, listen: {{endpoints: []}}, {QUIET}}}"#
    ))
}

fn pattern(p: &Publisher, w: usize, h: usize, fmt: PixelFormat, n: u64) -> Frame {
    let mut f = p.acquire(w, h, fmt).unwrap();
    let d = f.data_mut().unwrap();
    for (i, b) in d.iter_mut().enumerate() {
        *b = (i as u64).wrapping_mul(31).wrapping_add(n * 7) as u8;
    }
    f
}

fn smooth(p: &Publisher, w: usize, h: usize, n: u64) -> Frame {
    let mut f = p.acquire(w, h, PixelFormat::Bgra).unwrap();
    let d = f.data_mut().unwrap();
    for y in 0..h {
        for x in 0..w {
            let o = (y * w + x) * 4;
            d[o] = (x * 255 / w) as u8;
            d[o + 1] = (y * 255 / h) as u8;
            d[o + 2] = ((x + y + n as usize) % 256) as u8;
            d[o + 3] = 255;
        }
    }
    f
}

/// A subscriber and a publisher over loopback TCP (`local`: false keeps the
/// frames on Zenoh although both ends are in this process).
fn pair(mode: Mode, encoding: Encoding) -> (Subscriber, Publisher) {
    pair_with(mode, encoding, false)
}

fn pair_with(mode: Mode, encoding: Encoding, local: bool) -> (Subscriber, Publisher) {
    let port = free_port();
    let key = format!("test/fb/{port}");
    let sub = Subscriber::with_local(&key, &listen(port), None, local).unwrap();
    let publ = Publisher::new(
        &key,
        PublisherConfig {
            mode,
            encoding,
            config: connect(port),
            pool: None,
            local,
        },
    )
    .unwrap();
    let t = Instant::now();
    while sub.publishers() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "publisher never seen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The subscriber's declaration must reach the publisher too.
    assert!(publ.has_subscribers().is_ok());
    publ.wait_for_subscribers(1, Duration::from_secs(10))
        .unwrap();
    (sub, publ)
}

fn bytes(f: &Frame) -> Vec<u8> {
    // SAFETY: test frames are not written after they are shared.
    unsafe { f.data() }.to_vec()
}

#[test]
fn lossless_raw_frames_arrive_pixel_exact_in_order() {
    let (sub, publ) = pair(Mode::Lossless, Encoding::Raw);
    let sent: Vec<Frame> = (0..40)
        .map(|n| pattern(&publ, 640, 480, PixelFormat::Bgra, n))
        .collect();
    let t = std::thread::scope(|s| {
        let h = s.spawn(|| {
            for f in &sent {
                publ.send(f).unwrap();
            }
        });
        let mut got = Vec::new();
        for _ in 0..sent.len() {
            got.push(sub.recv(Some(Duration::from_secs(10))).unwrap());
        }
        h.join().unwrap();
        got
    });
    for (i, (a, b)) in sent.iter().zip(&t).enumerate() {
        assert_eq!(b.seq(), i as u64 + 1);
        assert_eq!(b.layout(), a.layout());
        assert_eq!(b.timestamp_ns(), a.timestamp_ns());
        assert!(!b.is_writable());
        assert!(bytes(a) == bytes(b), "frame {i} differs");
    }
    let s = sub.stats();
    assert_eq!((s.received, s.skipped, s.bad), (40, 0, 0));
    assert_eq!(publ.stats().copies, 0);
}

#[test]
fn same_host_frames_take_the_local_channel_not_the_network() {
    for mode in [Mode::Lossless, Mode::Latest] {
        let (sub, publ) = pair_with(mode, Encoding::Lz4, true);
        let n = 60u64;
        let sent: Vec<Frame> = (0..n)
            .map(|i| pattern(&publ, 640, 480, PixelFormat::Bgra, i))
            .collect();
        let got = std::thread::scope(|s| {
            s.spawn(|| {
                for f in &sent {
                    publ.send(f).unwrap();
                    if mode == Mode::Latest {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            });
            let mut got = Vec::new();
            while got.last().is_none_or(|f: &Frame| f.seq() < n) {
                got.push(sub.recv(Some(Duration::from_secs(10))).unwrap());
            }
            got
        });
        let seqs: Vec<u64> = got.iter().map(|f| f.seq()).collect();
        if mode == Mode::Lossless {
            assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
        } else {
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        }
        for f in &got {
            let i = (f.seq() - 1) as usize;
            assert!(bytes(f) == bytes(&sent[i]), "{mode:?} frame {i} differs");
        }
        let (ss, ps) = (sub.stats(), publ.stats());
        assert!(sub.is_local(), "{ss:?}");
        // The channel's frames are the publisher's own slots: nothing decoded,
        // and (once switched) nothing encoded or put on the network.
        let over_zenoh = ss.received - ss.local;
        assert!(ss.local >= 40, "{mode:?}: {ss:?}");
        assert_eq!(ss.slot_bytes, over_zenoh * 640 * 480 * 4, "{ss:?}");
        assert!(ps.sent < n / 2, "{mode:?}: {ps:?} vs {ss:?}");
        assert!(ps.local >= ss.local, "{ps:?}");
        // Only frames Zenoh carried live in the subscriber's own pool.
        assert_eq!(sub.pool().stats().slots_in_use as u64, over_zenoh);
    }
}

#[test]
fn every_lossless_encoding_round_trips_exactly() {
    for enc in [Encoding::Lz4, Encoding::Zstd { level: 3 }] {
        let (sub, publ) = pair(Mode::Lossless, enc);
        // Big enough for several parallel parts; a padded stride survives.
        for (n, fmt) in [PixelFormat::Bgra, PixelFormat::Rgb, PixelFormat::Nv12]
            .into_iter()
            .enumerate()
        {
            let f = pattern(&publ, 1920, 1200, fmt, n as u64);
            publ.send(&f).unwrap();
            let g = sub.recv(Some(Duration::from_secs(10))).unwrap();
            assert_eq!(g.layout(), f.layout(), "{enc:?} {fmt}");
            assert!(bytes(&f) == bytes(&g), "{enc:?} {fmt} differs");
        }
        let st = publ.stats();
        assert!(st.wire_bytes < st.raw_bytes, "{enc:?}: {st:?}");
        assert_eq!(st.copies, 3);
    }
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
}

#[test]
fn jpeg_round_trips_within_a_psnr_bound() {
    let (sub, publ) = pair(Mode::Lossless, Encoding::Jpeg { quality: 90 });
    let f = smooth(&publ, 1280, 720, 0);
    publ.send(&f).unwrap();
    let g = sub.recv(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(
        (g.width(), g.height(), g.format()),
        (1280, 720, PixelFormat::Bgra)
    );
    let (a, b) = (bytes(&f), bytes(&g));
    let p = psnr(&a, &b);
    assert!(p > 35.0, "psnr {p}");
    assert!(publ.stats().wire_bytes < a.len() as u64 / 10);
    // Formats JPEG cannot carry are refused, naming the format.
    let e = publ
        .acquire(64, 64, PixelFormat::Nv12)
        .unwrap_err()
        .to_string();
    assert!(e.contains("NV12"), "{e}");
}

/// `close` right after the last send, while a slow lossless subscriber holds
/// Zenoh's reader back (so the link is mid-batch): every frame still arrives,
/// pixel-exact, then `Closed`. Zenoh's own close cancels the TX task in the
/// middle of a batch; without the delivery barrier the tail was lost or one
/// frame arrived with its last fragment filled from other batches.
#[test]
fn close_waits_until_a_slow_subscriber_took_every_frame() {
    let (sub, publ) = pair(Mode::Lossless, Encoding::Raw);
    let n = 24u64;
    let sent: Vec<Vec<u8>> = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut sent = Vec::new();
            for k in 0..n {
                let f = pattern(&publ, 1280, 720, PixelFormat::Bgra, k);
                sent.push(bytes(&f));
                publ.send(&f).unwrap();
            }
            let t = Instant::now();
            publ.close();
            (sent, t.elapsed())
        });
        let mut got = Vec::new();
        loop {
            match sub.recv(Some(Duration::from_secs(20))) {
                Ok(f) => {
                    std::thread::sleep(Duration::from_millis(30)); // a slow reader
                    got.push((f.seq(), bytes(&f)));
                }
                Err(ZenohError::Closed { .. }) => break,
                Err(e) => panic!("after {} frames: {e}", got.len()),
            }
        }
        let (sent, closing) = h.join().unwrap();
        assert!(closing < CLOSE_DELIVERY_WAIT, "close took {closing:?}");
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
        for (k, (a, (_, b))) in sent.iter().zip(&got).enumerate() {
            assert!(a == b, "frame {k} arrived with other pixels");
        }
        sent
    });
    assert_eq!(sent.len() as u64, n);
}

#[test]
fn publisher_gone_closes_then_a_new_one_recovers() {
    let port = free_port();
    let key = format!("test/fb/{port}");
    let sub = Subscriber::new(&key, &listen(port), None).unwrap();
    for round in 0..2 {
        let publ = Publisher::new(
            &key,
            PublisherConfig {
                mode: Mode::Lossless,
                config: connect(port),
                ..Default::default()
            },
        )
        .unwrap();
        let t = Instant::now();
        while sub.publishers() == 0 {
            assert!(t.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(10));
        }
        publ.wait_for_subscribers(1, Duration::from_secs(10))
            .unwrap();
        for n in 0..3 {
            publ.send(&pattern(&publ, 64, 64, PixelFormat::Gray8, n))
                .unwrap();
        }
        publ.close();
        for n in 0..3 {
            let f = sub.recv(Some(Duration::from_secs(10))).unwrap();
            assert_eq!(f.seq(), n + 1, "round {round}");
        }
        let t = Instant::now();
        match sub.recv(Some(Duration::from_secs(10))) {
            Err(ZenohError::Closed {
                reason: CloseReason::PublisherGone,
                ..
            }) => {}
            r => panic!("round {round}: {r:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(2));
    }
    sub.close();
    assert!(matches!(
        sub.recv(None),
        Err(ZenohError::Closed {
            reason: CloseReason::Closed,
            ..
        })
    ));
}

#[test]
fn latest_keeps_only_the_newest() {
    let (sub, publ) = pair(Mode::Latest, Encoding::Raw);
    for n in 0..20 {
        publ.send(&pattern(&publ, 256, 256, PixelFormat::Bgra, n))
            .unwrap();
    }
    // Each older frame is replaced once: in the publisher's mailbox (before
    // Zenoh) or in the subscriber's queue (after); which depends on timing.
    let t = Instant::now();
    while publ.stats().replaced + sub.stats().skipped < 19 {
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", sub.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    let f = sub.recv(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(f.seq(), 20);
    assert!(sub.try_recv().unwrap().is_none());
    assert_eq!(publ.stats().replaced + sub.stats().skipped, 19);
}

#[test]
fn bad_keys_and_configs_are_named() {
    let e = ConfigSource::Json5("{mdoe: \"peer\"}".into())
        .load()
        .unwrap_err();
    assert!(e.to_string().contains("mdoe"), "{e}");
    let e = ConfigSource::Json5("{mode: \"pear\"}".into())
        .load()
        .unwrap_err();
    assert!(e.to_string().contains("pear"), "{e}");
    let e = ConfigSource::from_text_or_path("/nonexistent/z.json5")
        .load()
        .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/z.json5"), "{e}");
    let e = Publisher::new("a/*/b", PublisherConfig::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("a/*/b"), "{e}");
    let e = Publisher::new("a//b", PublisherConfig::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("a//b"), "{e}");
    let e = Encoding::parse("png", None).unwrap_err().to_string();
    assert!(e.contains("png"), "{e}");
    let e = Encoding::parse("jpeg", Some(0)).unwrap_err().to_string();
    assert!(e.contains("quality=0"), "{e}");
}

#[test]
fn part_sizes_that_wrap_around_are_refused_not_a_panic() {
    // Sizes from the network whose sum wraps to the payload's length.
    let parts = [(usize::MAX, 4), (3, 4)];
    let mut out = [0u8; 8];
    let e = crate::wire::decompress("lz4", &[0u8; 2], &parts, &mut out).unwrap_err();
    assert!(e.contains("parts add up"), "{e}");
}

#[test]
fn the_mode_is_read_whatever_the_json_spacing() {
    use crate::subscriber::says_lossless;
    assert!(says_lossless(br#"{"seq":1,"mode":"lossless"}"#));
    assert!(says_lossless(br#"{"seq": 1, "mode": "lossless"}"#));
    assert!(says_lossless(b"{\"mode\" :\n \"lossless\"}"));
    assert!(!says_lossless(br#"{"mode": "latest"}"#));
    assert!(!says_lossless(br#"{"note": "mode", "x": "lossless"}"#));
    assert!(!says_lossless(b"{}"));
}

#[test]
fn attachments_round_trip_and_garbage_is_refused() {
    let m = Meta {
        layout: framebus_core::FrameLayout::new(7, 3, PixelFormat::Rgb, Some(24)).unwrap(),
        timestamp_ns: 5,
        unix_ns: Some(1_796_225_574_425_060_352),
        seq: 9,
        encoding: "zstd",
        parts: vec![(10, 63)],
    };
    assert_eq!(Meta::parse(&m.to_json()).unwrap(), m);
    let without = Meta { unix_ns: None, ..m };
    assert!(!String::from_utf8(without.to_json())
        .unwrap()
        .contains("unix_ns"));
    assert_eq!(Meta::parse(&without.to_json()).unwrap(), without);
    let e = Meta::parse(&valid_attachment_with("\"unix_ns\":-4")).unwrap_err();
    assert!(
        e.contains("\"unix_ns\" is not a non-negative integer"),
        "{e}"
    );
    for bad in [
        &b"nope"[..],
        b"{}",
        b"{\"framebus\":2}",
        b"{\"framebus\":1,\"width\":0,\"height\":1,\"format\":\"BGRA\",\"encoding\":\"raw\"}",
        b"{\"framebus\":1,\"width\":1,\"height\":1,\"format\":\"XYZ\",\"encoding\":\"raw\"}",
        b"{\"framebus\":1,\"width\":1,\"height\":1,\"format\":\"BGRA\",\"encoding\":\"gif\"}",
    ] {
        assert!(
            Meta::parse(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn frame_transport_settings_fill_only_zenohs_defaults() {
    use crate::config::with_frame_transport;
    let cfg = with_frame_transport(listen(free_port()).load().unwrap()).unwrap();
    for (key, _, ours) in crate::config::FRAME_TRANSPORT {
        assert_eq!(cfg.get_json(key).unwrap(), ours, "{key}");
    }
    // A value the configuration sets is kept.
    let set = ConfigSource::Json5(
        "{transport: {link: {tx: {queue: {size: {data: 4}}}, rx: {buffer_size: 131072}}}}".into(),
    );
    let cfg = with_frame_transport(set.load().unwrap()).unwrap();
    assert_eq!(
        cfg.get_json("transport/link/tx/queue/size/data").unwrap(),
        "4"
    );
    assert_eq!(
        cfg.get_json("transport/link/rx/buffer_size").unwrap(),
        "131072"
    );
}

/// A small deterministic generator (xorshift64*): the fuzz tests below need
/// no dependency and replay the same inputs on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn valid_attachment() -> Vec<u8> {
    Meta {
        layout: framebus_core::FrameLayout::new(64, 48, PixelFormat::Bgra, None).unwrap(),
        timestamp_ns: 123,
        unix_ns: None,
        seq: 7,
        encoding: "lz4",
        parts: vec![(100, 12288)],
    }
    .to_json()
}

/// [`valid_attachment`] with one more `"key":value` member.
fn valid_attachment_with(member: &str) -> Vec<u8> {
    let mut a = valid_attachment();
    a.pop();
    a.extend_from_slice(format!(",{member}}}").as_bytes());
    a
}

#[test]
fn timestamps_from_another_clock_are_rebased_through_unix_time() {
    use crate::wire::{local_timestamp_ns, SAME_CLOCK_NS};
    let here: i128 = 1_700_000_000_000_000_000; // this host booted at that Unix time
                                                // The same host: kept exactly, whatever the measuring jitter.
    for jitter in [0, 1_000, -(SAME_CLOCK_NS - 1)] {
        let unix = (5_000 + here + jitter) as u64;
        assert_eq!(local_timestamp_ns(5_000, Some(unix), here), 5_000);
    }
    // No wall-clock time: kept (plain Zenoh publishers, older framebus).
    assert_eq!(local_timestamp_ns(42, None, here), 42);
    // Another host, booted 100 000 s earlier: its timestamp is ~1e14 ns larger
    // for the same instant; re-based, the frame is 2 s old here at 10 s.
    let there = here - 100_000_000_000_000;
    let sent = 10_000_000_000u64 + 100_000_000_000_000 - 2_000_000_000;
    let unix = (i128::from(sent) + there) as u64;
    assert_eq!(local_timestamp_ns(sent, Some(unix), here), 8_000_000_000);
    // An instant before this host's boot: 0, not a wrap-around.
    assert_eq!(local_timestamp_ns(7, Some(1), here), 0);
}

#[test]
fn the_attachment_parser_never_panics_on_random_or_truncated_bytes() {
    let good = valid_attachment();
    assert!(Meta::parse(&good).is_ok());
    // Every truncation: not JSON any more, said so.
    for n in 0..good.len() {
        let e = Meta::parse(&good[..n]).unwrap_err();
        assert!(e.contains("not JSON"), "{n}: {e}");
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Random bytes, and random bytes from JSON's alphabet (reach deeper).
    let alphabet =
        b"{}[],:\"0123456789-.eE truefalsnl framebuswidthheightstrideformatencodingparts";
    for i in 0..20_000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if i % 2 == 0 {
                    rng.next() as u8
                } else {
                    alphabet[rng.below(alphabet.len())]
                }
            })
            .collect();
        if let Err(e) = Meta::parse(&bytes) {
            assert!(!e.is_empty());
        }
    }
    // A valid attachment with bytes changed, inserted or removed.
    for _ in 0..20_000 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(b.len());
            match rng.below(3) {
                0 => b[at] = alphabet[rng.below(alphabet.len())],
                1 => b.insert(at, alphabet[rng.below(alphabet.len())]),
                _ => {
                    b.remove(at);
                }
            }
        }
        match Meta::parse(&b) {
            Ok(m) => assert!(m.layout.byte_len() >= m.layout.width),
            Err(e) => assert!(!e.is_empty()),
        }
    }
}

#[test]
fn a_bad_attachment_field_is_named_in_the_error() {
    let good: serde_json::Value = serde_json::from_slice(&valid_attachment()).unwrap();
    let huge = serde_json::json!(u64::MAX);
    let bad_values = [
        serde_json::json!("x"),
        serde_json::json!(-1),
        serde_json::json!(1.5),
        serde_json::json!([]),
        serde_json::json!({}),
        huge,
        serde_json::json!(1u64 << 40),
    ];
    for field in [
        "framebus", "width", "height", "stride", "format", "encoding", "parts",
    ] {
        for bad in &bad_values {
            let mut v = good.clone();
            v[field] = bad.clone();
            let text = serde_json::to_vec(&v).unwrap();
            match Meta::parse(&text) {
                // Right types may be accepted: a stride wider than the row
                // (when it fits), an empty parts list (the decompressor checks
                // the sizes against the payload).
                Ok(m) => assert!(
                    (field == "stride" && bad.as_u64() == Some(m.layout.stride as u64))
                        || (field == "parts"
                            && m.parts.is_empty()
                            && bad == &serde_json::json!([])),
                    "{field} = {bad} accepted: {m:?}"
                ),
                Err(e) => assert!(
                    e.contains(field)
                        || e.contains(&bad.to_string().trim_matches('"').to_string())
                        || (field == "framebus" && e.contains("version")),
                    "{field} = {bad}: {e}"
                ),
            }
        }
        // A missing field is named too (stride and parts are optional).
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove(field);
        match Meta::parse(&serde_json::to_vec(&v).unwrap()) {
            Ok(_) => assert!(
                field == "stride" || field == "parts",
                "{field} missing accepted"
            ),
            Err(e) => assert!(
                e.contains(field) || field == "framebus",
                "{field} missing: {e}"
            ),
        }
    }
}

#[test]
fn a_publisher_counts_its_framebus_subscribers() {
    // Two subscribers listening (one on a wildcard key), a publisher connected to both.
    let (pa, pb) = (free_port(), free_port());
    let key = format!("test/fb/count/{pa}");
    let a = Subscriber::with_local(&key, &listen(pa), None, false).unwrap();
    let publ = Publisher::new(
        &key,
        PublisherConfig {
            config: ConfigSource::Json5(format!(
                r#"{{mode: "peer", connect: {{endpoints: ["tcp/127.0.0.1:{pa}", "tcp/127.0.0.1:{pb}"]}}, listen: {{endpoints: []}}, {QUIET}}}"#
            )),
            local: false,
            ..PublisherConfig::default()
        },
    )
    .unwrap();
    assert_eq!(
        publ.wait_for_subscribers(1, Duration::from_secs(10))
            .unwrap(),
        1
    );
    let b = Subscriber::with_local("test/fb/count/*", &listen(pb), None, false).unwrap();
    assert_eq!(
        publ.wait_for_subscribers(2, Duration::from_secs(10))
            .unwrap(),
        2
    );
    // A third never comes: the error says how many there are.
    let e = publ
        .wait_for_subscribers(3, Duration::from_millis(300))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(
        e.to_string().contains("waiting for 3 subscribers (2 now)"),
        "{e}"
    );
    b.close();
    let t = Instant::now();
    while publ.subscribers().unwrap() != 1 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the closed one still counted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(a);
    while publ.subscribers().unwrap() != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the last one still counted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_lease_shorter_than_the_blocked_wait_shortens_the_wait() {
    use crate::config::{with_frame_transport, WAIT_BEFORE_CLOSE_US};
    let (wait, zenoh_default) = WAIT_BEFORE_CLOSE_US;
    let wait_of = |text: &str| {
        let cfg = with_frame_transport(ConfigSource::Json5(text.into()).load().unwrap()).unwrap();
        cfg.get_json(wait).unwrap()
    };
    // Zenoh's defaults (10 s lease): the 5 s wait stays.
    assert_eq!(wait_of("{}"), zenoh_default.to_string());
    // A 3 s lease: the wait becomes half of it, so a blocked transport ends first.
    assert_eq!(
        wait_of("{transport: {link: {tx: {lease: 3000}}}}"),
        "1500000"
    );
    // A wait the configuration sets is kept, whatever the lease.
    assert_eq!(
        wait_of(
            "{transport: {link: {tx: {lease: 3000, queue: {congestion_control: {block: {wait_before_close: 4000000}}}}}}}"
        ),
        "4000000"
    );
}
