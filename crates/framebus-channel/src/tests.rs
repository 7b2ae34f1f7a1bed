//! Tests of the whole channel: threads and real processes (the test binary
//! re-runs itself as a child with `FRAMEBUS_CHANNEL_CHILD` set), pixel-exact
//! delivery, ordering, skips, pins, crashes (`kill -9`) and garbage in shared
//! memory.

use crate::{ChannelError, Mode, OnFull, Publisher, PublisherConfig, Subscriber};
use framebus_core::{Frame, PixelFormat};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static UNIQUE: AtomicU64 = AtomicU64::new(0);
const SEC: Duration = Duration::from_secs(1);

fn unique(tag: &str) -> String {
    format!(
        "t-{tag}-{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

fn cfg(mode: Mode) -> PublisherConfig {
    PublisherConfig {
        mode,
        ..Default::default()
    }
}

fn byte(k: u64, i: usize) -> u8 {
    (k as usize)
        .wrapping_mul(31)
        .wrapping_add(i.wrapping_mul(7)) as u8
}

/// A frame from the publisher's pool filled with the pattern of `k`.
fn filled(p: &Publisher, w: usize, h: usize, fmt: PixelFormat, k: u64) -> Frame {
    let mut f = p.acquire(w, h, fmt).unwrap().with_meta(1000 + k, k);
    for (i, b) in f.data_mut().unwrap().iter_mut().enumerate() {
        *b = byte(k, i);
    }
    f
}

fn check_pixels(f: &Frame, k: u64) {
    // SAFETY: received frames are read-only and pinned; nobody writes them.
    let d = unsafe { f.data() };
    let bad = d.iter().enumerate().position(|(i, &b)| b != byte(k, i));
    assert_eq!(bad, None, "frame {k}: first bad byte");
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn latest_delivers_newest_and_counts_skips() {
    let name = unique("latest");
    let p = Publisher::new(&name, cfg(Mode::Latest)).unwrap();
    let mut s = Subscriber::connect(&name, SEC).unwrap();
    assert_eq!(p.subscribers(), 1);
    for k in 1..=10 {
        p.send(&filled(&p, 64, 48, PixelFormat::Bgra, k)).unwrap();
    }
    let f = s.recv(Some(SEC)).unwrap();
    assert_eq!((f.seq(), f.timestamp_ns()), (10, 1010));
    assert!(!f.is_writable());
    check_pixels(&f, 10);
    assert_eq!(s.skipped(), 9);
    assert_eq!(p.stats().replaced, 9);
    // nothing newer: a timeout, not a stale frame
    let e = s.recv(Some(Duration::from_millis(30))).unwrap_err();
    assert!(matches!(e, ChannelError::Timeout(..)), "{e}");
    p.send(&filled(&p, 64, 48, PixelFormat::Bgra, 11)).unwrap();
    let g = s.recv(Some(SEC)).unwrap();
    assert_eq!(g.seq(), 11);
    assert_eq!(s.skipped(), 9);
    drop((f, g));
}

#[test]
fn received_frame_pins_the_slot_until_dropped() {
    let name = unique("pins");
    let p = Publisher::new(&name, cfg(Mode::Latest)).unwrap();
    let mut s = Subscriber::connect(&name, SEC).unwrap();
    let f = filled(&p, 32, 32, PixelFormat::Gray8, 1);
    let id = f.lease().slot_id();
    p.send(&f).unwrap();
    drop(f);
    let r = s.recv(Some(SEC)).unwrap();
    // the publisher pins it: the pool cannot hand the slot out again
    assert_eq!(p.stats().pins, 1);
    assert_eq!(p.pool().stats().slots_in_use, 1);
    let other = p.acquire(32, 32, PixelFormat::Gray8).unwrap();
    assert_ne!(other.lease().slot_id(), id);
    drop(other);
    let held_clone = r.clone();
    drop(r);
    // A release is sent only when the subscriber's last lease goes, and
    // `held` counts exactly those not given back: no release left, so the pin
    // cannot have gone (no need to wait and see).
    assert_eq!(s.held(), 1, "a clone still holds it");
    assert_eq!(p.stats().pins, 1, "a clone still holds it");
    drop(held_clone);
    wait_until("release", SEC, || p.stats().pins == 0);
    assert_eq!(p.pool().stats().slots_in_use, 0);
    assert_eq!(s.held(), 0);
}

#[test]
fn lossless_keeps_order_and_pixels_across_threads_and_layouts() {
    let name = unique("lossless");
    let p = Publisher::new(
        &name,
        PublisherConfig {
            mode: Mode::Lossless { depth: 4 },
            on_full: OnFull::Block(Some(Duration::from_secs(10))),
            ..Default::default()
        },
    )
    .unwrap();
    let n = 300u64;
    let mut subs: Vec<Subscriber> = (0..3)
        .map(|_| Subscriber::connect(&name, SEC).unwrap())
        .collect();
    let readers: Vec<_> = subs
        .drain(..)
        .map(|mut s| {
            std::thread::spawn(move || {
                for k in 0..n {
                    let f = s.recv(Some(Duration::from_secs(10))).unwrap();
                    assert_eq!(f.seq(), k + 1, "out of order");
                    let (w, h, fmt) = shape(k);
                    assert_eq!((f.width(), f.height(), f.format()), (w, h, fmt));
                    check_pixels(&f, k);
                }
                assert_eq!(s.skipped(), 0);
            })
        })
        .collect();
    for k in 0..n {
        let (w, h, fmt) = shape(k);
        p.send(&filled(&p, w, h, fmt, k)).unwrap();
    }
    for r in readers {
        r.join().unwrap();
    }
    wait_until("all releases", SEC, || p.stats().pins == 0);
}

/// Frames change size and format between sends.
fn shape(k: u64) -> (usize, usize, PixelFormat) {
    match k % 3 {
        0 => (64, 36, PixelFormat::Bgra),
        1 => (30, 20, PixelFormat::Rgb),
        _ => (16, 8, PixelFormat::Nv12),
    }
}

#[test]
fn lossless_full_raises_or_times_out() {
    let name = unique("full");
    let p = Publisher::new(
        &name,
        PublisherConfig {
            mode: Mode::Lossless { depth: 2 },
            on_full: OnFull::Raise,
            ..Default::default()
        },
    )
    .unwrap();
    let mut s = Subscriber::connect(&name, SEC).unwrap();
    for k in 0..2 {
        p.send(&filled(&p, 8, 8, PixelFormat::Gray8, k)).unwrap();
    }
    let e = p
        .send(&filled(&p, 8, 8, PixelFormat::Gray8, 2))
        .unwrap_err();
    assert!(matches!(e, ChannelError::Full { depth: 2, .. }), "{e}");
    assert_eq!(s.recv(Some(SEC)).unwrap().seq(), 1);
    p.send(&filled(&p, 8, 8, PixelFormat::Gray8, 2)).unwrap();

    let name = unique("block");
    let p = Publisher::new(
        &name,
        PublisherConfig {
            mode: Mode::Lossless { depth: 1 },
            on_full: OnFull::Block(Some(Duration::from_millis(80))),
            ..Default::default()
        },
    )
    .unwrap();
    let mut s2 = Subscriber::connect(&name, SEC).unwrap();
    p.send(&filled(&p, 8, 8, PixelFormat::Gray8, 0)).unwrap();
    let t = Instant::now();
    let e = p
        .send(&filled(&p, 8, 8, PixelFormat::Gray8, 1))
        .unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(80));
    assert!(e.to_string().contains("waited"), "{e}");
    // a receiver in another thread unblocks a waiting sender
    let h = std::thread::spawn(move || {
        wait_until("the sender to block", 5 * SEC, || s2.publisher_waiting());
        let a = s2.recv(Some(SEC)).unwrap().seq();
        let b = s2.recv(Some(SEC)).unwrap().seq();
        (a, b)
    });
    p.send(&filled(&p, 8, 8, PixelFormat::Gray8, 5)).unwrap();
    assert_eq!(h.join().unwrap(), (1, 2));
    drop(s);
}

#[test]
fn try_send_never_waits_and_sends_nothing_when_full() {
    let name = unique("trysend");
    let p = Publisher::new(
        &name,
        PublisherConfig {
            mode: Mode::Lossless { depth: 1 },
            on_full: OnFull::Block(None), // `send` would wait forever here
            ..Default::default()
        },
    )
    .unwrap();
    let mut s = Subscriber::connect(&name, SEC).unwrap();
    assert_eq!(
        p.try_send(&filled(&p, 8, 8, PixelFormat::Gray8, 1))
            .unwrap(),
        Some(1)
    );
    let t = Instant::now();
    let full = filled(&p, 8, 8, PixelFormat::Gray8, 9);
    assert_eq!(p.try_send(&full).unwrap(), None);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    drop(full);
    let f = s.recv(Some(SEC)).unwrap();
    assert_eq!(f.seq(), 1);
    check_pixels(&f, 1);
    assert!(
        s.try_recv().unwrap().is_none(),
        "the refused frame went nowhere"
    );
    assert_eq!(
        p.try_send(&filled(&p, 8, 8, PixelFormat::Gray8, 2))
            .unwrap(),
        Some(2)
    );
    check_pixels(&s.recv(Some(SEC)).unwrap(), 2);
    let late = filled(&p, 8, 8, PixelFormat::Gray8, 3);
    p.close();
    let e = p.try_send(&late);
    assert!(matches!(e, Err(ChannelError::Closed(_))), "{e:?}");
}

#[test]
fn eight_subscribers_join_and_leave() {
    let name = unique("eight");
    let p = Publisher::new(&name, cfg(Mode::Lossless { depth: 8 })).unwrap();
    let mut subs: Vec<Subscriber> = (0..8)
        .map(|_| Subscriber::connect(&name, SEC).unwrap())
        .collect();
    assert_eq!(p.subscribers(), 8);
    p.send(&filled(&p, 40, 30, PixelFormat::Rgba, 1)).unwrap();
    for s in &mut subs {
        check_pixels(&s.recv(Some(SEC)).unwrap(), 1);
    }
    // half leave, one joins
    subs.truncate(4);
    subs.push(Subscriber::connect(&name, SEC).unwrap());
    wait_until("leavers gone", SEC, || p.subscribers() == 5);
    p.send(&filled(&p, 40, 30, PixelFormat::Rgba, 2)).unwrap();
    for s in &mut subs {
        let f = s.recv(Some(SEC)).unwrap();
        assert_eq!(f.seq(), 2);
        check_pixels(&f, 2);
    }
    wait_until("releases", SEC, || p.stats().pins == 0);
}

#[test]
fn names_errors_and_reuse() {
    let e = Publisher::new("bad/name", cfg(Mode::Latest)).unwrap_err();
    assert!(matches!(e, ChannelError::InvalidName { .. }), "{e}");
    let e = Publisher::new("x", cfg(Mode::Lossless { depth: 0 })).unwrap_err();
    assert!(e.to_string().contains("depth"), "{e}");
    let name = unique("names");
    let e = Subscriber::connect(&name, Duration::ZERO).unwrap_err();
    assert!(matches!(e, ChannelError::NotFound { .. }), "{e}");
    let p = Publisher::new(&name, cfg(Mode::Latest)).unwrap();
    let e = Publisher::new(&name, cfg(Mode::Latest)).unwrap_err();
    assert!(matches!(e, ChannelError::NameInUse(_)), "{e}");
    let mut s = Subscriber::connect(&name, SEC).unwrap();
    let mut polling = Subscriber::connect(&name, SEC).unwrap();
    assert!(polling.try_recv().unwrap().is_none());
    p.send(&filled(&p, 4, 4, PixelFormat::Gray8, 3)).unwrap();
    p.close();
    // the last frame is still delivered, then Closed; the name is free again
    let last = s.recv(Some(SEC)).unwrap();
    assert_eq!(last.seq(), 1);
    check_pixels(&last, 3);
    assert!(matches!(s.recv(Some(SEC)), Err(ChannelError::Closed(_))));
    // try_recv too: the queued frame, then Closed (not None forever)
    check_pixels(&polling.try_recv().unwrap().expect("queued frame"), 3);
    let e = polling.try_recv().unwrap_err();
    assert!(matches!(e, ChannelError::Closed(_)), "{e}");
    let p2 = Publisher::new(&name, cfg(Mode::Latest)).unwrap();
    drop(p2);
}

#[test]
fn frames_from_any_pool_are_sent_without_copy() {
    let name = unique("anypool");
    let p = Publisher::new(&name, cfg(Mode::Latest)).unwrap();
    let mut s = Subscriber::connect(&name, SEC).unwrap();
    let other = framebus_core::FramePool::default();
    let mut f = other
        .acquire_frame(10, 10, PixelFormat::Gray8, Some(16))
        .unwrap();
    f.data_mut().unwrap().fill(99);
    let id = f.lease().slot_id();
    p.send(&f).unwrap();
    let r = s.recv(Some(SEC)).unwrap();
    assert_eq!(r.stride(), 16);
    // SAFETY: read-only received frame, no writer.
    assert!(unsafe { r.data() }.iter().all(|&b| b == 99));
    drop(f);
    assert_eq!(other.stats().slots_in_use, 1, "pinned by the subscriber");
    drop(r);
    wait_until("release", SEC, || other.stats().slots_in_use == 0);
    // sending the same slot again does not resend its fd (same table entry)
    let f2 = other
        .acquire_frame(10, 10, PixelFormat::Gray8, Some(16))
        .unwrap();
    assert_eq!(f2.lease().slot_id(), id);
    p.send(&f2).unwrap();
    assert_eq!(s.recv(Some(SEC)).unwrap().stride(), 16);
}

#[test]
fn garbage_in_the_control_block_never_crashes_or_hangs() {
    // A xorshift generator: reproducible garbage.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for mode in [Mode::Latest, Mode::Lossless { depth: 4 }] {
        let name = unique("fuzz");
        let p = Publisher::new(
            &name,
            PublisherConfig {
                mode,
                on_full: OnFull::Raise,
                ..Default::default()
            },
        )
        .unwrap();
        let mut s = Subscriber::connect(&name, SEC).unwrap();
        let (ptr, len) = s.control_bytes();
        let (mut ok, mut err) = (0, 0);
        for round in 0..400u64 {
            let _ = p.send(&filled(&p, 16, 16, PixelFormat::Bgra, round));
            // scribble: a few random words, sometimes the whole block
            let words = len / 8;
            let n = if round % 10 == 0 {
                words
            } else {
                1 + rnd() as usize % 8
            };
            for _ in 0..n {
                let off = (rnd() as usize % words) * 8;
                let v = match rnd() % 4 {
                    0 => rnd(),
                    1 => rnd() % 64,
                    2 => 0,
                    _ => u64::MAX,
                };
                // SAFETY: off + 8 <= len, inside the live control mapping; the
                // word is only ever accessed atomically by the channel, and an
                // aligned 8-byte atomic store is what the peer would do.
                unsafe {
                    (*(ptr.add(off) as *const std::sync::atomic::AtomicU64))
                        .store(v, Ordering::Relaxed)
                };
            }
            let t = Instant::now();
            match s.recv(Some(Duration::from_millis(5))) {
                Ok(f) => {
                    // whatever it is, it lies inside its slot
                    assert!(f.byte_len() <= f.lease().capacity());
                    // SAFETY: read-only frame; reading every byte must not fault.
                    let sum: u64 = unsafe { f.data() }.iter().map(|&b| u64::from(b)).sum();
                    std::hint::black_box(sum);
                    ok += 1;
                }
                Err(_) => err += 1,
            }
            assert!(t.elapsed() < Duration::from_secs(2), "recv hung");
        }
        assert!(ok + err == 400 && err > 0, "ok={ok} err={err}");
    }
}

// ---------------------------------------------------------------- processes

const CHILD_ENV: &str = "FRAMEBUS_CHANNEL_CHILD";

fn spawn_child(role: &str, name: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{role}:{name}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Not a test on its own: the body of child processes spawned by the tests below.
#[test]
fn child_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (role, name) = spec.split_once(':').unwrap();
    match role {
        // receive 50 lossless frames, check every pixel, print the count
        "reader" => {
            let mut s = Subscriber::connect(name, Duration::from_secs(5)).unwrap();
            for k in 0..50 {
                let f = s.recv(Some(Duration::from_secs(10))).unwrap();
                assert_eq!(f.seq(), k + 1);
                check_pixels(&f, k);
            }
            println!("@@READ-OK 50");
        }
        // take 3 frames, hold them, announce it, then wait to be killed
        "holder" => {
            let mut s = Subscriber::connect(name, Duration::from_secs(5)).unwrap();
            let held: Vec<Frame> = (0..3)
                .map(|_| s.recv(Some(Duration::from_secs(10))).unwrap())
                .collect();
            println!("@@HOLDING {}", held.len());
            std::thread::sleep(Duration::from_secs(60));
        }
        // publish one frame, then wait to be killed
        "publisher" => {
            let p = Publisher::new(name, cfg(Mode::Latest)).unwrap();
            p.wait_for_subscribers(1, Duration::from_secs(10)).unwrap();
            p.send(&filled(&p, 8, 8, PixelFormat::Gray8, 7)).unwrap();
            println!("@@SENT");
            std::thread::sleep(Duration::from_secs(60));
        }
        "close-counts" => child_close_counts(name),
        "pub-close-counts" => child_publisher_close_counts(name),
        r => panic!("unknown role {r}"),
    }
}

fn read_line(c: &mut Child) -> String {
    use std::io::BufRead;
    let out = c.stdout.as_mut().unwrap();
    let mut r = std::io::BufReader::new(out);
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap() == 0 {
            return String::new();
        }
        // libtest prints its own text around ours: find our marker
        if let Some(i) = l.find("@@") {
            return l[i + 2..].trim().to_owned();
        }
    }
}

#[test]
fn process_reader_gets_every_pixel_in_order() {
    let name = unique("proc");
    let p = Publisher::new(&name, cfg(Mode::Lossless { depth: 4 })).unwrap();
    let mut c = spawn_child("reader", &name);
    p.wait_for_subscribers(1, Duration::from_secs(10)).unwrap();
    for k in 0..50 {
        p.send(&filled(&p, 120, 80, PixelFormat::Bgra, k)).unwrap();
    }
    assert_eq!(read_line(&mut c), "READ-OK 50");
    assert!(c.wait().unwrap().success());
    wait_until("hang-up", Duration::from_secs(2), || p.subscribers() == 0);
    assert_eq!(p.stats().pins, 0);
}

#[test]
fn killed_subscriber_pins_are_reclaimed_and_slots_reused() {
    let name = unique("kill-sub");
    let p = Publisher::new(&name, cfg(Mode::Lossless { depth: 4 })).unwrap();
    let mut c = spawn_child("holder", &name);
    p.wait_for_subscribers(1, Duration::from_secs(10)).unwrap();
    let mut ids = Vec::new();
    for k in 0..3 {
        let f = filled(&p, 64, 64, PixelFormat::Bgra, k);
        ids.push(f.lease().slot_id());
        p.send(&f).unwrap();
    }
    assert_eq!(read_line(&mut c), "HOLDING 3");
    assert_eq!(p.stats().pins, 3);
    assert_eq!(p.pool().stats().slots_in_use, 3);
    c.kill().unwrap(); // SIGKILL
    c.wait().unwrap();
    let t = Instant::now();
    // The pin count drops first, the slots' leases right after it (on the
    // reaping thread): wait for both.
    wait_until("pins reclaimed", Duration::from_secs(2), || {
        p.stats().pins == 0 && p.pool().stats().slots_in_use == 0
    });
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(p.stats().disconnected, 1);
    // the freed slots are handed out again
    let again = p.acquire(64, 64, PixelFormat::Bgra).unwrap();
    assert!(ids.contains(&again.lease().slot_id()));
}

#[test]
fn killed_publisher_closes_the_channel_and_frees_the_name() {
    let name = unique("kill-pub");
    let mut c = spawn_child("publisher", &name);
    let mut s = Subscriber::connect(&name, Duration::from_secs(10)).unwrap();
    assert_eq!(read_line(&mut c), "SENT");
    let f = s.recv(Some(Duration::from_secs(5))).unwrap();
    check_pixels(&f, 7);
    c.kill().unwrap();
    c.wait().unwrap();
    let t = Instant::now();
    let e = s.recv(Some(Duration::from_secs(10))).unwrap_err();
    assert!(matches!(e, ChannelError::Closed(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(1));
    // the frame received before the crash is still readable
    check_pixels(&f, 7);
    // a new publisher takes the name
    let p = Publisher::new(&name, cfg(Mode::Latest)).unwrap();
    let mut s2 = Subscriber::connect(&name, SEC).unwrap();
    p.send(&filled(&p, 8, 8, PixelFormat::Gray8, 8)).unwrap();
    check_pixels(&s2.recv(Some(SEC)).unwrap(), 8);
}

#[test]
fn tight_loop_reuses_a_few_slots() {
    let name = unique("tight");
    let p = Publisher::new(&name, cfg(Mode::Latest)).unwrap();
    let mut s = Subscriber::connect(&name, SEC).unwrap();
    for k in 0..20_000 {
        p.send(&filled(&p, 16, 16, PixelFormat::Gray8, k)).unwrap();
        let f = s.recv(Some(SEC)).unwrap();
        assert_eq!(f.seq(), k + 1);
    }
    // releases are collected by acquire/send themselves: no slot pile-up
    assert!(p.pool().stats().slots <= 3, "{:?}", p.pool().stats());
    assert_eq!(s.skipped(), 0);
}

// ------------------------------------------------- one suite, both transports

mod conformance {
    use super::{unique, SEC};
    use crate::local::Local;
    use crate::transport::{FrameReceiver, FrameSender, Shm, Transport};
    use crate::{ChannelError, Mode, OnFull, PublisherConfig};
    use framebus_core::{Frame, FramePool, PixelFormat};
    use std::time::{Duration, Instant};

    fn frame(pool: &FramePool, value: u8) -> Frame {
        let mut f = pool.acquire_frame(16, 8, PixelFormat::Gray8, None).unwrap();
        f.data_mut().unwrap().fill(value);
        f
    }

    fn value(f: &Frame) -> u8 {
        // SAFETY: received frames are read-only; nobody writes them.
        let d = unsafe { f.data() };
        assert!(d.iter().all(|&b| b == d[0]), "torn frame");
        d[0]
    }

    fn cfg(mode: Mode, on_full: OnFull) -> PublisherConfig {
        PublisherConfig {
            mode,
            on_full,
            ..Default::default()
        }
    }

    fn settle(pool: &FramePool) {
        let end = Instant::now() + SEC;
        while pool.stats().slots_in_use != 0 {
            assert!(
                Instant::now() < end,
                "slots still pinned: {:?}",
                pool.stats()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn latest_skips<T: Transport>() {
        let name = unique("conf-latest");
        let pool = FramePool::default();
        let tx = T::publish(&name, cfg(Mode::Latest, OnFull::Raise)).unwrap();
        let mut rx = T::subscribe(&name, SEC).unwrap();
        assert_eq!(tx.subscriber_count(), 1);
        for v in 1..=5 {
            tx.send(&frame(&pool, v)).unwrap();
        }
        let f = rx.recv(Some(SEC)).unwrap();
        assert_eq!((value(&f), f.seq(), rx.skipped()), (5, 5, 4));
        assert!(!f.is_writable());
        assert!(matches!(
            rx.recv(Some(Duration::from_millis(10))),
            Err(ChannelError::Timeout(..))
        ));
        drop(f);
        settle(&pool);
    }

    fn lossless_order_and_back_pressure<T: Transport>() {
        let name = unique("conf-lossless");
        let pool = FramePool::default();
        let tx = T::publish(&name, cfg(Mode::Lossless { depth: 2 }, OnFull::Raise)).unwrap();
        let mut rx = T::subscribe(&name, SEC).unwrap();
        tx.send(&frame(&pool, 1)).unwrap();
        tx.send(&frame(&pool, 2)).unwrap();
        let e = tx.send(&frame(&pool, 3)).unwrap_err();
        assert!(matches!(e, ChannelError::Full { depth: 2, .. }), "{e}");
        assert_eq!(value(&rx.recv(Some(SEC)).unwrap()), 1);
        tx.send(&frame(&pool, 3)).unwrap();
        assert_eq!(value(&rx.recv(Some(SEC)).unwrap()), 2);
        assert_eq!(value(&rx.recv(Some(SEC)).unwrap()), 3);
        assert_eq!(rx.skipped(), 0);
        settle(&pool);
    }

    fn blocked_sender_is_released_by_a_reader<T: Transport>() {
        let name = unique("conf-block");
        let pool = FramePool::default();
        let tx = T::publish(
            &name,
            cfg(Mode::Lossless { depth: 1 }, OnFull::Block(Some(5 * SEC))),
        )
        .unwrap();
        let mut rx = T::subscribe(&name, SEC).unwrap();
        tx.send(&frame(&pool, 1)).unwrap();
        std::thread::scope(|sc| {
            let sender = sc.spawn(|| tx.send(&frame(&pool, 2)));
            // the sender blocks on the full queue (not merely has not run yet)
            super::wait_until("the sender to block", 5 * SEC, || tx.waiting_senders() == 1);
            assert!(!sender.is_finished(), "did not block");
            assert_eq!(value(&rx.recv(Some(SEC)).unwrap()), 1);
            sender.join().unwrap().unwrap();
            assert_eq!(value(&rx.recv(Some(SEC)).unwrap()), 2);
        });
        assert_eq!(tx.waiting_senders(), 0);
    }

    fn close_drains_then_closed<T: Transport>() {
        let name = unique("conf-close");
        let pool = FramePool::default();
        let tx = T::publish(&name, cfg(Mode::Lossless { depth: 4 }, OnFull::Raise)).unwrap();
        let mut rx = T::subscribe(&name, SEC).unwrap();
        for v in 1..=3 {
            tx.send(&frame(&pool, v)).unwrap();
        }
        tx.close();
        let got: Vec<u8> = (0..3)
            .map(|_| value(&rx.recv(Some(SEC)).unwrap()))
            .collect();
        assert_eq!(got, [1, 2, 3]);
        assert!(matches!(rx.recv(Some(SEC)), Err(ChannelError::Closed(_))));
        assert!(matches!(
            T::subscribe(&name, Duration::ZERO),
            Err(ChannelError::NotFound { .. })
        ));
        // the name can be taken again
        T::publish(&name, cfg(Mode::Latest, OnFull::Raise)).unwrap();
    }

    fn received_frames_pin_their_slot<T: Transport>() {
        let name = unique("conf-pin");
        let pool = FramePool::new(framebus_core::PoolConfig {
            max_slots: Some(1),
            ..Default::default()
        });
        let tx = T::publish(&name, cfg(Mode::Latest, OnFull::Raise)).unwrap();
        let mut rx = T::subscribe(&name, SEC).unwrap();
        tx.send(&frame(&pool, 9)).unwrap();
        let held = rx.recv(Some(SEC)).unwrap();
        // the only slot is pinned by the receiver: the pool cannot reuse it
        assert!(pool.acquire(128).is_err());
        assert_eq!(value(&held), 9);
        drop(held);
        settle(&pool);
        assert!(pool.acquire(128).is_ok());
    }

    fn suite<T: Transport>() {
        latest_skips::<T>();
        lossless_order_and_back_pressure::<T>();
        blocked_sender_is_released_by_a_reader::<T>();
        close_drains_then_closed::<T>();
        received_frames_pin_their_slot::<T>();
    }

    #[test]
    fn shared_memory_channel_conforms() {
        suite::<Shm>();
    }

    #[test]
    fn in_process_channel_conforms() {
        suite::<Local>();
    }
}

/// Inodes of every fd open in this process.
fn open_inodes() -> Vec<u64> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::metadata(e.ok()?.path()).ok())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .collect()
}

#[test]
fn idle_slots_are_retired_so_trimmed_memory_is_really_freed() {
    let name = unique("idle");
    let p = Publisher::new(
        &name,
        PublisherConfig {
            idle_slot_timeout: Duration::from_millis(50),
            ..Default::default()
        },
    )
    .unwrap();
    let mut s = Subscriber::connect(&name, SEC).unwrap();
    let f = filled(&p, 64, 64, PixelFormat::Bgra, 1);
    let ino = rustix::fs::fstat(f.lease().fd().unwrap()).unwrap().st_ino as u64;
    p.send(&f).unwrap();
    drop(f);
    check_pixels(&s.recv(Some(SEC)).unwrap(), 1);
    assert_eq!(s.cached_slots(), 1);
    wait_until("retired", SEC, || {
        let _ = s.try_recv();
        s.cached_slots() == 0
    });
    // the pool gives the slot back to the kernel: no fd to it is left anywhere
    wait_until("release", SEC, || p.pool().stats().slots_in_use == 0);
    assert!(p.pool().trim() > 0);
    assert!(
        !open_inodes().contains(&ino),
        "memfd still open after trim + retire"
    );
    // sending again after retirement works (the fd crosses again)
    p.send(&filled(&p, 64, 64, PixelFormat::Bgra, 2)).unwrap();
    check_pixels(&s.recv(Some(SEC)).unwrap(), 2);
    assert_eq!(s.cached_slots(), 1);
}

#[test]
fn spinning_recv_gets_frames_and_respects_its_timeout() {
    let name = unique("spin");
    let p = Publisher::new(&name, cfg(Mode::Latest)).unwrap();
    let mut s = Subscriber::connect(&name, SEC).unwrap();
    s.set_spin(crate::Spin::For(Duration::from_secs(1)));
    let t = Instant::now();
    let e = s.recv(Some(Duration::from_millis(30))).unwrap_err();
    assert!(matches!(e, ChannelError::Timeout(..)), "{e}");
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(30) && waited < Duration::from_millis(500));
    let sender = std::thread::spawn(move || {
        // Pacing, not synchronisation: the frame should come while recv spins
        // (it passes whichever comes first).
        std::thread::sleep(Duration::from_millis(20));
        p.send(&filled(&p, 8, 8, PixelFormat::Gray8, 4)).unwrap();
        p
    });
    check_pixels(&s.recv(Some(SEC)).unwrap(), 4);
    drop(sender.join().unwrap());
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[test]
fn adaptive_spin_learns_the_cadence_and_sleeps_between_frames() {
    let name = unique("adaptive");
    let p = Publisher::new(&name, cfg(Mode::Lossless { depth: 4 })).unwrap();
    let mut s = Subscriber::connect(&name, SEC).unwrap();
    s.set_spin(crate::Spin::Adaptive);
    const PERIOD: Duration = Duration::from_millis(20);
    const N: u64 = 25;
    let sender = std::thread::spawn(move || {
        let start = Instant::now();
        for k in 1..=N {
            if let Some(d) = (start + PERIOD * k as u32).checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            p.send(&filled(&p, 16, 4, PixelFormat::Gray8, k)).unwrap();
        }
        p
    });
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    for k in 1..=N {
        let f = s.recv(Some(SEC)).unwrap();
        assert_eq!(f.seq(), k);
        check_pixels(&f, k);
    }
    let (cpu, wall) = (thread_cpu() - cpu0, wall0.elapsed());
    drop(sender.join().unwrap());
    // the period it paces itself by is the sender's (sleep-paced, so a bit over)
    let period = s.send_period().expect("cadence learnt");
    assert!(
        period >= PERIOD - Duration::from_millis(2) && period < PERIOD * 2,
        "{period:?}"
    );
    // it spun only in windows around each frame (2 ms early + ≥ 0.5 ms late of
    // every 20 ms), not all the time as a full spin would (cpu ≈ wall)
    assert!(cpu < wall / 2, "cpu {cpu:?} of {wall:?}");
    // once the frames stop, recv still times out on time
    let t = Instant::now();
    let e = s.recv(Some(Duration::from_millis(60))).unwrap_err();
    assert!(
        matches!(e, ChannelError::Closed(_)) || matches!(e, ChannelError::Timeout(..)),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_millis(500));
}

#[test]
fn a_cut_off_subscriber_keeps_the_pins_of_frames_it_holds() {
    let name = unique("cutoff");
    let p = Publisher::new(&name, cfg(Mode::Lossless { depth: 4 })).unwrap();
    let mut s = Subscriber::connect(&name, SEC).unwrap();
    p.send(&filled(&p, 32, 8, PixelFormat::Gray8, 1)).unwrap();
    let held = s.recv(Some(SEC)).unwrap();
    // The subscriber scribbles an impossible read position (header offset 20).
    let (ptr, _) = s.control_bytes();
    // SAFETY: offset 20 is the aligned AtomicU32 `read_pos` inside the live
    // control mapping; it is only ever accessed atomically.
    unsafe { (*(ptr.add(20) as *const std::sync::atomic::AtomicU32)).store(999, Ordering::SeqCst) };
    p.send(&filled(&p, 32, 8, PixelFormat::Gray8, 2)).unwrap();
    assert_eq!(p.subscribers(), 0, "cut off");
    // it sees the end of the stream, but the frame it holds stays pinned and intact
    assert!(matches!(s.recv(Some(SEC)), Err(ChannelError::Closed(_))));
    assert_eq!(p.stats().pins, 1);
    let other = p.acquire(32, 8, PixelFormat::Gray8).unwrap();
    assert_ne!(other.lease().slot_id(), held.lease().slot_id());
    check_pixels(&held, 1);
    drop(held);
    wait_until("release", SEC, || p.stats().pins == 0);
}

#[test]
fn closing_a_subscriber_gives_back_frames_it_never_took() {
    for mode in [Mode::Latest, Mode::Lossless { depth: 4 }] {
        let name = unique("close-sub");
        let p = Publisher::new(&name, cfg(mode)).unwrap();
        let mut s = Subscriber::connect(&name, SEC).unwrap();
        let mut keep = Subscriber::connect(&name, SEC).unwrap();
        for k in 0..3 {
            p.send(&filled(&p, 8, 8, PixelFormat::Gray8, k)).unwrap();
        }
        let held = s.recv(Some(SEC)).unwrap();
        p.send(&filled(&p, 8, 8, PixelFormat::Gray8, 3)).unwrap();
        // latest: s holds 1 + 1 pending, keep 1 pending; lossless: s 1 + 3 queued, keep 4
        let (before, untaken, keeps) = match mode {
            Mode::Latest => (3, 1, 1),
            Mode::Lossless { .. } => (8, 3, 4),
        };
        assert_eq!(p.stats().pins, before);
        s.close(); // still connected: it holds `held`
        wait_until("untaken pins returned", SEC, || {
            p.stats().pins == before - untaken
        });
        check_pixels(&held, if mode == Mode::Latest { 2 } else { 0 });
        drop((held, s));
        wait_until("all of s's pins", SEC, || p.stats().pins == keeps);
        drop(keep.recv(Some(SEC)).unwrap());
    }
}

#[test]
fn a_sender_blocked_on_a_subscriber_is_freed_when_it_leaves_or_dies() {
    let name = unique("leave");
    let p = Publisher::new(
        &name,
        PublisherConfig {
            mode: Mode::Lossless { depth: 1 },
            on_full: OnFull::Block(Some(Duration::from_secs(10))),
            ..Default::default()
        },
    )
    .unwrap();
    let mut s = Subscriber::connect(&name, SEC).unwrap();
    p.send(&filled(&p, 8, 8, PixelFormat::Gray8, 0)).unwrap();
    let closer = std::thread::spawn(move || {
        wait_until("the sender to block", 5 * SEC, || s.publisher_waiting());
        s.close(); // says goodbye: the sender must stop waiting for it
        s
    });
    let t = Instant::now();
    p.send(&filled(&p, 8, 8, PixelFormat::Gray8, 1)).unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(closer.join().unwrap());
}

#[test]
fn a_slot_table_smaller_than_the_queue_grows_instead_of_failing() {
    let name = unique("table");
    let p = Publisher::new(
        &name,
        PublisherConfig {
            mode: Mode::Lossless { depth: 8 },
            max_slots: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let mut s = Subscriber::connect(&name, SEC).unwrap();
    let frames: Vec<Frame> = (0..8)
        .map(|k| filled(&p, 8, 8, PixelFormat::Gray8, k))
        .collect();
    for f in &frames {
        p.send(f).unwrap();
    }
    assert_eq!(p.stats().pinned_slots, 8);
    drop(frames);
    for k in 0..8 {
        let f = s.recv(Some(SEC)).unwrap();
        check_pixels(&f, k);
    }
    wait_until("releases", SEC, || p.stats().pins == 0);
    p.send(&filled(&p, 8, 8, PixelFormat::Gray8, 8)).unwrap();
    check_pixels(&s.recv(Some(SEC)).unwrap(), 8);
}

/// Lossless channels of every depth with the default `max_slots` (64): each
/// reader holds one frame while it receives the next (what `f = sub.recv()`
/// does in Python), so depth + 1 frames per reader are pinned at times, and
/// the publisher's next slot needs one more entry. The table used to be fixed
/// at `max_slots`, so depth >= 63 failed with "all 64 entries … are pinned".
#[test]
fn lossless_depth_is_not_limited_by_the_slot_table() {
    for depth in [1u32, 63, 64, 256] {
        for readers in [1usize, 3] {
            let name = unique("depth");
            let p = Publisher::new(
                &name,
                PublisherConfig {
                    mode: Mode::Lossless { depth },
                    on_full: OnFull::Block(Some(Duration::from_secs(20))),
                    ..Default::default()
                },
            )
            .unwrap();
            let n = u64::from(depth) * 2 + 70;
            let subs: Vec<Subscriber> = (0..readers)
                .map(|_| Subscriber::connect(&name, SEC).unwrap())
                .collect();
            let threads: Vec<_> = subs
                .into_iter()
                .map(|mut s| {
                    std::thread::spawn(move || {
                        let mut held: Option<Frame> = None;
                        for k in 0..n {
                            let f = s.recv(Some(Duration::from_secs(20))).unwrap();
                            assert_eq!(f.seq(), k + 1);
                            check_pixels(&f, k);
                            held = Some(f); // the previous one goes only now
                            assert!(s.held() <= 2);
                        }
                        drop(held);
                        s
                    })
                })
                .collect();
            for k in 0..n {
                let f = filled(&p, 8, 4, PixelFormat::Gray8, k);
                if let Err(e) = p.send(&f) {
                    panic!("depth {depth}, {readers} readers, frame {k}: {e}");
                }
            }
            let subs: Vec<Subscriber> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            wait_until("releases", 5 * SEC, || p.stats().pins == 0);
            drop(subs);
        }
    }
}

/// Open fds of this process.
fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Mappings of memfds in this process.
fn memfd_maps() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().filter(|l| l.contains("/memfd:")).count()
}

fn fd_list() -> String {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    v.sort();
    v.join(", ")
}

/// Child body: closing a subscriber frees what no held frame needs. Counts
/// are of this whole process, so it runs alone in a child.
fn child_close_counts(name: &str) {
    let (fd0, m0) = (fd_count(), memfd_maps());
    // A: nothing held at close -> everything goes, socket included
    let mut s = Subscriber::connect(name, Duration::from_secs(5)).unwrap();
    for k in 0..20 {
        let f = s.recv(Some(Duration::from_secs(10))).unwrap();
        check_pixels(&f, k);
    }
    assert_eq!(s.cached_slots(), 20);
    assert!(memfd_maps() >= m0 + 21, "20 slots + the control block");
    s.close();
    assert_eq!(
        (fd_count(), memfd_maps()),
        (fd0, m0),
        "after close: {}",
        fd_list()
    );
    // the subscriber's own close, not the publisher's
    let e = s.recv(Some(SEC)).unwrap_err();
    assert!(e.to_string().contains("subscriber closed"), "{e}");
    let e = s.try_recv().unwrap_err();
    assert!(
        matches!(&e, ChannelError::Closed(c) if c.reason == crate::CloseReason::SubscriberClosed),
        "{e}"
    );
    drop(s);
    assert_eq!((fd_count(), memfd_maps()), (fd0, m0));
    // B: one frame held -> it keeps its own mapping + fd, and the socket
    let mut s = Subscriber::connect(name, Duration::from_secs(5)).unwrap();
    let mut held = None;
    for k in 0..20 {
        let f = s.recv(Some(Duration::from_secs(10))).unwrap();
        check_pixels(&f, k);
        held = Some(f);
    }
    s.close();
    assert_eq!(
        (fd_count(), memfd_maps()),
        (fd0 + 2, m0 + 1),
        "holding one: {}",
        fd_list()
    );
    check_pixels(held.as_ref().unwrap(), 19);
    drop(held); // the last release closes the socket too
    assert_eq!((fd_count(), memfd_maps()), (fd0, m0), "{}", fd_list());
    drop(s);
    println!("@@CLOSE-OK");
}

/// Records what a [`framebus_core::SlotHook`] hears: live mappings by address.
#[derive(Default)]
struct HookRecorder {
    live: std::sync::Mutex<std::collections::HashMap<usize, (usize, bool)>>,
    maps: AtomicU64,
    unmaps: AtomicU64,
}

impl framebus_core::SlotHook for HookRecorder {
    fn on_map(&self, slot: &framebus_core::Slot) {
        let e = (slot.capacity(), slot.is_writable());
        let old = self.live.lock().unwrap().insert(slot.as_ptr() as usize, e);
        assert!(old.is_none(), "mapped twice");
        self.maps.fetch_add(1, Ordering::Relaxed);
    }
    fn on_unmap(&self, slot: &framebus_core::Slot) {
        let old = self.live.lock().unwrap().remove(&(slot.as_ptr() as usize));
        assert_eq!(old, Some((slot.capacity(), false)), "unmapped unseen");
        self.unmaps.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_subscriber_hooks_each_slot_mapping_once_read_only() {
    let name = unique("hook");
    let p = Publisher::new(&name, cfg(Mode::Lossless { depth: 8 })).unwrap();
    let mut s = Subscriber::connect(&name, SEC).unwrap();
    let rec = std::sync::Arc::new(HookRecorder::default());
    s.set_slot_hook(rec.clone());
    // 200 frames through a handful of slots: one mapping (and one hook
    // call) per slot, not per frame, every one read-only
    let mut slots = std::collections::HashSet::new();
    for k in 0..200 {
        let f = filled(&p, 64, 32, PixelFormat::Bgra, k);
        slots.insert(f.lease().slot_id());
        p.send(&f).unwrap();
        drop(f);
        let r = s.recv(Some(SEC)).unwrap();
        check_pixels(&r, k);
        assert!(rec
            .live
            .lock()
            .unwrap()
            .contains_key(&(r.as_ptr() as usize)));
    }
    let maps = rec.maps.load(Ordering::Relaxed);
    assert_eq!(maps as usize, slots.len(), "one mapping per publisher slot");
    assert!(rec.live.lock().unwrap().values().all(|&(_, w)| !w));
    // close unmaps every cached mapping, each through the hook
    s.close();
    assert_eq!(rec.unmaps.load(Ordering::Relaxed), maps);
    assert!(rec.live.lock().unwrap().is_empty());
}

#[test]
fn subscriber_close_unmaps_and_closes_what_no_held_frame_needs() {
    let name = unique("close-fds");
    let p = Publisher::new(&name, cfg(Mode::Lossless { depth: 32 })).unwrap();
    let mut c = spawn_child("close-counts", &name);
    for phase in 0..2u64 {
        p.wait_for_subscribers(1, Duration::from_secs(10)).unwrap();
        // 20 distinct slots: the publisher holds its frames meanwhile
        let frames: Vec<Frame> = (0..20)
            .map(|k| filled(&p, 64, 16, PixelFormat::Gray8, k))
            .collect();
        for f in &frames {
            p.send(f).unwrap();
        }
        // it closes (phase 0: holding nothing) or drops its frame (phase 1):
        // either way its socket closes, and the next one may connect at once
        wait_until("the subscriber to go", Duration::from_secs(10), || {
            p.stats().disconnected == phase + 1
        });
        drop(frames);
    }
    assert_eq!(read_line(&mut c), "CLOSE-OK");
    assert!(c.wait().unwrap().success());
    wait_until("pins", 5 * SEC, || p.stats().pins == 0);
}

/// Child body: closing a publisher frees what subscribers do not pin.
fn child_publisher_close_counts(name: &str) {
    let (fd0, m0) = (fd_count(), memfd_maps());
    let p = Publisher::new(name, cfg(Mode::Lossless { depth: 16 })).unwrap();
    let mut s = Subscriber::connect(name, Duration::from_secs(5)).unwrap();
    let frames: Vec<Frame> = (0..10)
        .map(|k| filled(&p, 64, 16, PixelFormat::Gray8, k))
        .collect();
    for f in &frames {
        p.send(f).unwrap();
    }
    drop(frames);
    let mut held = None;
    for k in 0..10 {
        let f = s.recv(Some(SEC)).unwrap();
        check_pixels(&f, k);
        held = Some(f);
    }
    wait_until("releases", 5 * SEC, || p.stats().pins == 1);
    s.close();
    p.close();
    // publisher: its wake eventfd, the pinned slot (fd + map) and the socket
    // of the subscriber that pins it; subscriber: the held frame's mapping + fd
    // and its socket. No control block, doorbell or free pool slot is left.
    wait_until("close to settle", 5 * SEC, || {
        (fd_count(), memfd_maps()) == (fd0 + 5, m0 + 2)
    });
    check_pixels(held.as_ref().unwrap(), 9);
    assert_eq!(p.stats().pins, 1);
    drop(held);
    // the release (a hang-up: the subscriber holds nothing now) frees the rest
    wait_until("the last pin", 5 * SEC, || {
        (fd_count(), memfd_maps()) == (fd0 + 1, m0)
    });
    // its own pool is closed with it; a frame from elsewhere is refused
    let other = framebus_core::FramePool::default();
    let e = p.send(&other.acquire_frame(8, 8, PixelFormat::Gray8, None).unwrap());
    assert!(e.unwrap_err().to_string().contains("publisher closed"));
    drop((p, s, other));
    assert_eq!((fd_count(), memfd_maps()), (fd0, m0), "{}", fd_list());
    println!("@@PUB-CLOSE-OK");
}

#[test]
fn publisher_close_frees_what_subscribers_do_not_pin() {
    let name = unique("pub-close-fds");
    let mut c = spawn_child("pub-close-counts", &name);
    assert_eq!(read_line(&mut c), "PUB-CLOSE-OK");
    assert!(c.wait().unwrap().success());
}

#[test]
fn connect_and_wait_for_subscribers_work_in_short_slices() {
    let name = unique("slices");
    let fds = open_inodes().len();
    // no publisher: each 20 ms slice ends on time with NotFound, leaving nothing open
    for _ in 0..10 {
        let t = Instant::now();
        let e = Subscriber::connect(&name, Duration::from_millis(20)).unwrap_err();
        assert!(matches!(e, ChannelError::NotFound { .. }), "{e}");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    let p = Publisher::new(&name, cfg(Mode::Latest)).unwrap();
    // no subscriber: each slice of wait_for_subscribers times out on time
    for _ in 0..10 {
        let t = Instant::now();
        let e = p
            .wait_for_subscribers(1, Duration::from_millis(20))
            .unwrap_err();
        assert!(matches!(e, ChannelError::Timeout(..)), "{e}");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    // a subscriber connecting in slices from another thread; the waiter in
    // slices sees it
    let connector = {
        let name = name.clone();
        std::thread::spawn(move || loop {
            match Subscriber::connect(&name, Duration::from_millis(100)) {
                Ok(s) => return s,
                Err(ChannelError::NotFound { .. }) => continue,
                Err(e) => panic!("{e}"),
            }
        })
    };
    let end = Instant::now() + 10 * SEC;
    let n = loop {
        match p.wait_for_subscribers(1, Duration::from_millis(100)) {
            Ok(n) => break n,
            Err(ChannelError::Timeout(..)) => assert!(Instant::now() < end, "no subscriber"),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(n, 1);
    let mut s = connector.join().unwrap();
    p.send(&filled(&p, 8, 8, PixelFormat::Gray8, 1)).unwrap();
    check_pixels(&s.recv(Some(SEC)).unwrap(), 1);
    drop((s, p));
    // (other tests run in parallel: allow their fds to come and go)
    let _ = fds;
}
