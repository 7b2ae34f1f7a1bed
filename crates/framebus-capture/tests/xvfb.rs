//! End-to-end tests against an Xvfb each test starts (skipped when Xvfb is
//! not installed): pixel-exact captures of a drawn pattern on both backends,
//! regions on every edge, bad regions, monitors, slot reuse and segment
//! detaching, screen resize, continuous capture (pacing, drops, a failing or
//! panicking thread, a server killed mid-capture, config bounds), the shared
//! reconnecting grabber and its targets.
//!
//! No sleep stands in for a condition: waits poll the condition with a
//! deadline (`wait_until`) or run a blocking call under a watchdog
//! (`returns_within`); the few sleeps left are the scenario (a slow consumer).

use framebus_capture::{
    testing, Backend, BackendChoice, Capture, CaptureConfig, CaptureError, Grabber, Region,
    SharedGrabber, Target, MAX_BUFFER, MAX_TARGET_FPS, MIN_TARGET_FPS,
};
use framebus_core::{FramePool, PoolConfig};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Poll `cond` until it holds, failing the test after `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Run `f` (a call that may block) on its own thread and return its result,
/// failing the test if it has not returned within `limit` (a hang becomes a
/// failure, not a stuck test run).
fn returns_within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|e| panic!("{what} did not return within {limit:?} ({e})"))
}

/// An Xvfb on a free display number, killed on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    /// Start `Xvfb -displayfd` (the server picks a free display number itself,
    /// so parallel tests and other projects' servers never collide), or None
    /// when Xvfb is not installed.
    fn start(w: u32, h: u32, extra: &[&str]) -> Option<Xvfb> {
        let x = Self::launch(None, w, h, extra);
        if x.is_none() {
            panic!("Xvfb did not report a display number");
        }
        x
    }

    /// Start an Xvfb on `display` (e.g. ":5", a server that was killed):
    /// None if Xvfb could not take that number (someone else took it).
    fn restart_at(display: &str, w: u32, h: u32) -> Option<Xvfb> {
        Self::launch(Some(display), w, h, &[])
    }

    /// Kill the server and reap it (its display stops answering).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn launch(display: Option<&str>, w: u32, h: u32, extra: &[&str]) -> Option<Xvfb> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let (r, wr) = rustix::pipe::pipe().expect("pipe");
        let spawned = Command::new("Xvfb")
            .args(display)
            .args(["-displayfd", &wr.as_raw_fd().to_string()])
            .args(["-screen", "0", &format!("{w}x{h}x24"), "-noreset"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = spawned else {
            eprintln!("Xvfb is not installed: skipping");
            return None;
        };
        drop(wr);
        let mut num = String::new();
        let mut reader = std::fs::File::from(r);
        let mut byte = [0u8; 1];
        while matches!(reader.read(&mut byte), Ok(1)) && byte[0] != b'\n' {
            num.push(byte[0] as char);
        }
        if num.trim().is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        Some(Xvfb {
            child,
            display: format!(":{}", num.trim()),
        })
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A BGRA pattern whose every pixel is distinct: B = x, G = y, R = x ^ y (mod 256).
fn pattern(r: Region) -> Vec<u8> {
    let mut v = Vec::with_capacity(r.width as usize * r.height as usize * 4);
    for y in 0..r.height as i32 {
        for x in 0..r.width as i32 {
            let (ax, ay) = (r.left + x, r.top + y);
            v.extend_from_slice(&[ax as u8, ay as u8, (ax ^ (ay * 3)) as u8, 0]);
        }
    }
    v
}

fn draw_full(x: &Xvfb, w: u32, h: u32) {
    let r = Region::new(0, 0, w, h);
    testing::put_image(Some(&x.display), r, &pattern(r)).unwrap();
}

fn frame_bytes(f: &framebus_core::Frame) -> Vec<u8> {
    // SAFETY: captured frames are read-only and nobody writes their slot now.
    unsafe { f.data().to_vec() }
}

/// Screen pixels with the fourth byte zeroed (depth 24 leaves it undefined).
fn rgb_only(mut v: Vec<u8>) -> Vec<u8> {
    v.iter_mut().skip(3).step_by(4).for_each(|a| *a = 0);
    v
}

#[test]
fn both_backends_capture_the_pattern_exactly_on_every_edge() {
    let Some(x) = Xvfb::start(320, 200, &[]) else {
        return;
    };
    draw_full(&x, 320, 200);
    for choice in [BackendChoice::Xshm, BackendChoice::XGetImage] {
        let mut g = Grabber::open(Some(&x.display), choice, FramePool::default()).unwrap();
        let expected = if choice == BackendChoice::Xshm {
            Backend::Xshm
        } else {
            Backend::XGetImage
        };
        assert_eq!(g.backend(), expected);
        for r in [
            Region::new(0, 0, 320, 200),
            Region::new(0, 0, 1, 1),
            Region::new(319, 199, 1, 1),
            Region::new(0, 0, 320, 1),
            Region::new(0, 199, 320, 1),
            Region::new(0, 0, 1, 200),
            Region::new(319, 0, 1, 200),
            Region::new(17, 33, 101, 67),
        ] {
            let f = g.grab(Some(r), false, None).unwrap();
            assert_eq!(
                (f.width(), f.height(), f.stride()),
                (r.width as usize, r.height as usize, r.width as usize * 4)
            );
            assert!(!f.is_writable());
            assert_eq!(rgb_only(frame_bytes(&f)), pattern(r), "{choice:?} {r}");
        }
    }
}

#[test]
fn bad_regions_name_the_bounds_and_do_not_switch_backends() {
    let Some(x) = Xvfb::start(64, 48, &[]) else {
        return;
    };
    let mut g = Grabber::open(Some(&x.display), BackendChoice::Auto, FramePool::default()).unwrap();
    assert_eq!(g.backend(), Backend::Xshm);
    for r in [
        Region::new(60, 0, 5, 1),
        Region::new(0, 47, 1, 2),
        Region::new(-1, 0, 1, 1),
        Region::new(0, 0, 0, 5),
    ] {
        let e = g.grab(Some(r), false, None).unwrap_err();
        assert!(matches!(e, CaptureError::BadRegion { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&r.to_string()) && msg.contains("64x48"),
            "{msg}"
        );
    }
    assert_eq!(g.backend(), Backend::Xshm);
    assert!(g.backend_reason().is_none());
    let e = g.monitor_region(9).unwrap_err();
    assert!(
        matches!(e, CaptureError::BadMonitor { index: 9, count: 2 }),
        "{e}"
    );
}

#[test]
fn tcp_display_falls_back_to_xgetimage_with_a_reason() {
    let Some(x) = Xvfb::start(64, 48, &["-listen", "tcp"]) else {
        return;
    };
    draw_full(&x, 64, 48);
    let tcp = format!("127.0.0.1{}", x.display);
    let mut g = Grabber::open(Some(&tcp), BackendChoice::Auto, FramePool::default()).unwrap();
    assert_eq!(g.backend(), Backend::XGetImage);
    assert!(
        g.backend_reason().unwrap().contains("TCP"),
        "{:?}",
        g.backend_reason()
    );
    let r = Region::new(3, 4, 50, 40);
    assert_eq!(
        rgb_only(frame_bytes(&g.grab(Some(r), false, None).unwrap())),
        pattern(r)
    );
    let e = Grabber::open(Some(&tcp), BackendChoice::Xshm, FramePool::default())
        .err()
        .unwrap();
    assert!(matches!(e, CaptureError::BackendUnavailable { .. }), "{e}");
}

#[test]
fn slots_are_reused_without_reattaching_and_detached_when_trimmed() {
    let Some(x) = Xvfb::start(64, 48, &[]) else {
        return;
    };
    let pool = FramePool::default();
    let mut g = Grabber::open(Some(&x.display), BackendChoice::Xshm, pool.clone()).unwrap();
    let r = Region::new(0, 0, 64, 48);
    let first = g.grab(Some(r), false, None).unwrap();
    let id = first.lease().slot_id();
    drop(first);
    for _ in 0..50 {
        let f = g.grab(Some(r), false, None).unwrap();
        assert_eq!(f.lease().slot_id(), id, "the freed slot is reused");
    }
    assert_eq!(g.attached_segments(), 1);
    let held = g.grab(Some(r), false, None).unwrap();
    let other = g.grab(Some(r), false, None).unwrap();
    assert_ne!(held.lease().slot_id(), other.lease().slot_id());
    assert_eq!(g.attached_segments(), 2);
    drop((held, other));
    assert!(pool.trim() > 0);
    // The next grab notices the unmapped slots and detaches their segments.
    let f = g.grab(Some(Region::new(0, 0, 8, 8)), false, None).unwrap();
    assert_eq!(g.attached_segments(), 1);
    drop(f);
}

#[test]
fn held_frame_is_unchanged_while_more_are_grabbed_into_a_bounded_pool() {
    let Some(x) = Xvfb::start(64, 48, &[]) else {
        return;
    };
    draw_full(&x, 64, 48);
    let pool = FramePool::new(PoolConfig {
        max_slots: Some(2),
        ..Default::default()
    });
    let mut g = Grabber::open(Some(&x.display), BackendChoice::Xshm, pool).unwrap();
    let r = Region::new(0, 0, 64, 48);
    let held = g.grab(Some(r), false, None).unwrap();
    let before = frame_bytes(&held);
    testing::put_image(Some(&x.display), r, &vec![0x55; 64 * 48 * 4]).unwrap();
    for _ in 0..200 {
        let f = g.grab(Some(r), false, None).unwrap();
        assert_ne!(f.lease().slot_id(), held.lease().slot_id());
        assert_eq!(frame_bytes(&f)[0], 0x55);
    }
    assert_eq!(frame_bytes(&held), before);
    // Both slots held: the bounded pool refuses instead of growing.
    let _second = g.grab(Some(r), false, None).unwrap();
    let e = g.grab(Some(r), false, None).unwrap_err();
    assert!(
        matches!(
            e,
            CaptureError::Core(framebus_core::Error::PoolExhausted { .. })
        ),
        "{e}"
    );
}

#[test]
fn monitors_follow_setmonitor_and_screen_resize_without_reopening() {
    let Some(x) = Xvfb::start(640, 480, &[]) else {
        return;
    };
    let mut g = Grabber::open(Some(&x.display), BackendChoice::Auto, FramePool::default()).unwrap();
    let m = g.monitors().unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!((m[0].width, m[0].height), (640, 480));
    assert_eq!(m[1].name, "screen");
    assert_eq!(m[1].output.as_deref(), Some("screen"));
    let xrandr = |args: &[&str]| {
        let st = Command::new("xrandr")
            .args(["-display", &x.display])
            .args(args)
            .status();
        st.map(|s| s.success()).unwrap_or(false)
    };
    if !xrandr(&["--setmonitor", "LEFT", "320/100x480/100+0+0", "none"]) {
        eprintln!("xrandr not usable: skipping the monitor part");
        return;
    }
    assert!(xrandr(&[
        "--setmonitor",
        "RIGHT",
        "320/100x480/100+320+0",
        "none"
    ]));
    let m = g.monitors().unwrap();
    let names: Vec<_> = m.iter().map(|m| m.name.as_str()).collect();
    assert!(
        names.contains(&"LEFT") && names.contains(&"RIGHT"),
        "{names:?}"
    );
    let right = m.iter().find(|m| m.name == "RIGHT").unwrap();
    assert_eq!(
        (right.left, right.top, right.width, right.height),
        (320, 0, 320, 480)
    );
    // Shrink the screen: the next grab's bounds check sees the new size.
    let _ = xrandr(&["--fb", "400x300"]);
    wait_until(Duration::from_secs(5), "the 400x300 screen size", || {
        g.screen_size().unwrap() == (400, 300)
    });
    let e = g
        .grab(Some(Region::new(0, 0, 640, 480)), false, None)
        .unwrap_err();
    assert!(e.to_string().contains("400x300"), "{e}");
    assert_eq!(g.grab(None, false, None).unwrap().width(), 400);
}

#[test]
fn continuous_capture_delivers_new_frames_in_order_and_counts_drops() {
    let Some(x) = Xvfb::start(64, 48, &[]) else {
        return;
    };
    let g = Grabber::open(Some(&x.display), BackendChoice::Auto, FramePool::default()).unwrap();
    let cap = Capture::start(
        g,
        CaptureConfig {
            target_fps: Some(200.0),
            buffer: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let mut last = 0;
    for _ in 0..20 {
        let f = cap.latest(Some(Duration::from_secs(5)), false).unwrap();
        assert!(f.seq() > last, "seq {} after {last}", f.seq());
        last = f.seq();
        // A slow consumer: come back only once two more frames were grabbed,
        // so the next latest() must skip (drop) at least one.
        wait_until(Duration::from_secs(5), "two more frames", || {
            cap.stats().captured >= last + 2
        });
    }
    let s = cap.stats();
    assert!(s.dropped > 0, "{s:?}");
    assert_eq!(s.delivered, 20);
    assert!(s.captured >= s.delivered + s.dropped, "{s:?}");
    // allow_repeat hands back the last frame at once.
    let again = cap.latest(Some(Duration::ZERO), true).unwrap();
    assert!(again.seq() >= last);
    let t0 = Instant::now();
    cap.stop();
    assert!(t0.elapsed() < Duration::from_secs(1));
    let e = cap.latest(Some(Duration::from_secs(1)), false).unwrap_err();
    assert!(matches!(e, CaptureError::Stopped(None)), "{e}");
}

#[test]
fn continuous_capture_holds_the_target_rate() {
    let Some(x) = Xvfb::start(64, 48, &[]) else {
        return;
    };
    let g = Grabber::open(Some(&x.display), BackendChoice::Auto, FramePool::default()).unwrap();
    let cap = Capture::start(
        g,
        CaptureConfig {
            target_fps: Some(50.0),
            ..Default::default()
        },
    )
    .unwrap();
    let first = cap.latest(Some(Duration::from_secs(5)), false).unwrap();
    let mut f = first.clone();
    while f.timestamp_ns() - first.timestamp_ns() < 1_000_000_000 {
        f = cap.next(Some(Duration::from_secs(5))).unwrap();
    }
    let n = f.seq() - first.seq();
    assert!((42..=55).contains(&n), "{n} frames in one second at 50 fps");
}

#[test]
fn on_demand_capture_grabs_only_when_the_last_frame_was_taken() {
    let Some(x) = Xvfb::start(64, 48, &[]) else {
        return;
    };
    let g = Grabber::open(Some(&x.display), BackendChoice::Auto, FramePool::default()).unwrap();
    let cap = Capture::start(
        g,
        CaptureConfig {
            target_fps: None,
            ..Default::default()
        },
    )
    .unwrap();
    for want in 1..=10 {
        let f = cap.latest(Some(Duration::from_secs(5)), false).unwrap();
        assert_eq!(f.seq(), want);
        // The thread grabs one frame ahead of the consumer...
        wait_until(Duration::from_secs(5), "the frame ahead", || {
            cap.stats().captured == want + 1
        });
        // ...and no more while the consumer works (the sleep is the consumer's work).
        std::thread::sleep(Duration::from_millis(5));
        let s = cap.stats();
        assert_eq!((s.captured, s.buffered), (want + 1, 1), "{s:?}");
    }
    let s = cap.stats();
    assert_eq!(s.dropped, 0);
    assert_eq!(s.captured, 11, "{s:?}");
}

#[test]
fn stop_returns_while_the_consumer_holds_every_slot_of_a_blocking_pool() {
    let Some(x) = Xvfb::start(64, 48, &[]) else {
        return;
    };
    let pool = FramePool::new(PoolConfig {
        max_slots: Some(2),
        on_exhausted: framebus_core::Exhausted::Block(None),
        ..Default::default()
    });
    let g = Grabber::open(Some(&x.display), BackendChoice::Auto, pool).unwrap();
    let cap = Capture::start(
        g,
        CaptureConfig {
            target_fps: Some(500.0),
            buffer: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let a = cap.next(Some(Duration::from_secs(5))).unwrap();
    let b = cap.next(Some(Duration::from_secs(5))).unwrap();
    // Both slots are held here: the thread cannot grab, and must not hang stop().
    let e = cap.next(Some(Duration::from_millis(50))).unwrap_err();
    assert!(matches!(e, CaptureError::Timeout(_)), "{e}");
    let t0 = Instant::now();
    cap.stop();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_ne!(a.lease().slot_id(), b.lease().slot_id());
}

/// The error every call on a dead capture returns: `Stopped` with the reason.
fn assert_dead(cap: &Capture, want: &str) {
    assert!(!cap.is_running());
    let reason = cap.error().expect("the error is kept");
    assert!(reason.contains(want), "{reason}");
    // Every later call fails at once, with the reason, even a repeat.
    let t0 = Instant::now();
    for e in [
        cap.latest(None, false).unwrap_err(),
        cap.latest(None, true).unwrap_err(),
        cap.next(None).unwrap_err(),
        cap.latest(Some(Duration::from_secs(60)), false)
            .unwrap_err(),
    ] {
        assert!(
            matches!(&e, CaptureError::Stopped(Some(r)) if *r == reason),
            "{e}"
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

#[test]
fn a_failing_or_panicking_capture_thread_wakes_every_waiter_with_its_error() {
    let Some(x) = Xvfb::start(64, 48, &[]) else {
        return;
    };
    for panics in [true, false] {
        let g = Grabber::open(Some(&x.display), BackendChoice::Auto, FramePool::default()).unwrap();
        // The hook lets the first grab through, then waits for `go` and fails.
        let (go, wait_go) = mpsc::channel::<()>();
        let mut grabs = 0;
        let cap = Capture::start_with_hook(
            g,
            CaptureConfig {
                target_fps: Some(1000.0),
                ..Default::default()
            },
            move |_| {
                grabs += 1;
                if grabs == 1 {
                    return Ok(());
                }
                let _ = wait_go.recv_timeout(Duration::from_secs(30));
                if panics {
                    panic!("injected panic for the test");
                }
                Err(CaptureError::X {
                    op: "injected",
                    detail: "injected error for the test".into(),
                })
            },
        )
        .unwrap();
        let cap = Arc::new(cap);
        let first = cap.latest(Some(Duration::from_secs(5)), false).unwrap();
        assert_eq!(first.seq(), 1);
        assert!(cap.is_running());
        // Waiters with no timeout, blocked (or about to block) on the empty ring.
        let (done, results) = mpsc::channel();
        for i in 0..3 {
            let (cap, done) = (cap.clone(), done.clone());
            std::thread::spawn(move || {
                let r = if i == 1 {
                    cap.next(None)
                } else {
                    cap.latest(None, false)
                };
                let _ = done.send(r.map(|f| f.seq()));
            });
        }
        go.send(()).unwrap();
        let want = if panics {
            "the capture thread panicked: injected panic for the test"
        } else {
            "X request injected failed: injected error for the test"
        };
        for _ in 0..3 {
            let r = results
                .recv_timeout(Duration::from_secs(10))
                .expect("every waiter wakes up");
            let e = r.unwrap_err();
            assert!(
                matches!(&e, CaptureError::Stopped(Some(m)) if m.contains(want)),
                "{e}"
            );
        }
        assert_dead(&cap, want);
        // The frame handed out before stays valid; stop() on a dead capture returns.
        assert_eq!(first.width(), 64);
        cap.stop();
        assert_dead(&cap, want);
    }
}

#[test]
fn killing_the_x_server_mid_capture_ends_the_capture_with_the_error() {
    for target_fps in [Some(200.0), None] {
        let Some(mut server) = Xvfb::start(64, 48, &[]) else {
            return;
        };
        let g = Grabber::open(
            Some(&server.display),
            BackendChoice::Auto,
            FramePool::default(),
        )
        .unwrap();
        let cap = Arc::new(
            Capture::start(
                g,
                CaptureConfig {
                    target_fps,
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        cap.latest(Some(Duration::from_secs(5)), false).unwrap();
        server.kill();
        // Frames grabbed before the kill may still come; then the error, promptly.
        let c = cap.clone();
        let e = returns_within(Duration::from_secs(10), "latest(None)", move || loop {
            match c.latest(None, false) {
                Ok(_) => continue,
                Err(e) => break e,
            }
        });
        assert!(matches!(&e, CaptureError::Stopped(Some(_))), "{e}");
        assert_dead(&cap, "X request");
    }
}

#[test]
fn capture_config_is_checked_before_the_thread_starts() {
    let Some(x) = Xvfb::start(64, 48, &[]) else {
        return;
    };
    let start = |target_fps, buffer| {
        let g = Grabber::open(Some(&x.display), BackendChoice::Auto, FramePool::default()).unwrap();
        Capture::start(
            g,
            CaptureConfig {
                target_fps,
                buffer,
                ..Default::default()
            },
        )
    };
    // The values: a panicking thread (1e-300, 1e-19), an abort (2**30),
    // a capacity overflow (2**62). Each is now a bad-input error naming it.
    for (fps, buffer, named) in [
        (Some(1e-300), 3, "target_fps=1e-300"),
        (Some(1e-19), 3, "target_fps=1e-19"),
        (Some(f64::NAN), 3, "target_fps=NaN"),
        (Some(60.0), 1 << 30, "buffer=1073741824"),
        (Some(60.0), 1 << 62, "buffer=4611686018427387904"),
        (Some(60.0), 0, "buffer=0"),
    ] {
        let e = start(fps, buffer).err().expect("rejected");
        assert!(e.is_bad_input(), "{e}");
        assert!(e.to_string().starts_with(named), "{e}");
    }
    // The bounds themselves are accepted; the slowest capture still stops at once.
    for (fps, buffer) in [
        (Some(MIN_TARGET_FPS), MAX_BUFFER),
        (Some(MAX_TARGET_FPS), 1),
    ] {
        let cap = start(fps, buffer).unwrap();
        cap.latest(Some(Duration::from_secs(5)), false).unwrap();
        let t0 = Instant::now();
        cap.stop();
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(matches!(
            cap.latest(None, false),
            Err(CaptureError::Stopped(None))
        ));
    }
}

#[test]
fn regions_whose_edges_overflow_are_bad_input_naming_the_region() {
    let Some(x) = Xvfb::start(64, 48, &[]) else {
        return;
    };
    let mut g = Grabber::open(Some(&x.display), BackendChoice::Auto, FramePool::default()).unwrap();
    for r in [
        Region::new(i32::MAX, i32::MAX, u32::MAX, u32::MAX),
        Region::new(i32::MIN, 0, u32::MAX, 1),
        Region::new(1, 1, u32::MAX, u32::MAX),
    ] {
        let e = g.grab(Some(r), false, None).unwrap_err();
        assert!(matches!(e, CaptureError::BadRegion { .. }), "{e}");
        assert!(e.to_string().contains(&r.to_string()), "{e}");
        let e = g.grab_target(Target::Rect(r), false, None).unwrap_err();
        assert!(e.is_bad_input(), "{e}");
        let e = Capture::start(
            Grabber::open(Some(&x.display), BackendChoice::Auto, FramePool::default()).unwrap(),
            CaptureConfig {
                region: Some(r),
                ..Default::default()
            },
        )
        .err()
        .expect("rejected");
        assert!(matches!(e, CaptureError::BadRegion { .. }), "{e}");
    }
    // From untrusted integers: the overflow is caught before a Region exists.
    let e = Region::from_box(i64::MIN, 0, i64::MAX, 1).unwrap_err();
    assert!(e.is_bad_input() && e.to_string().contains("box ("), "{e}");
    assert_eq!(
        g.backend(),
        Backend::Xshm,
        "bad input never switches backends"
    );
}

#[test]
fn shared_grabber_resolves_targets_follows_the_display_and_reconnects() {
    let Some(mut a) = Xvfb::start(64, 48, &[]) else {
        return;
    };
    let b = Xvfb::start(32, 16, &[]).unwrap();
    draw_full(&a, 64, 48);
    let shared = SharedGrabber::new(BackendChoice::Auto);
    let pool = FramePool::default();
    let grab =
        |display: &str, target| shared.grab(Some(display), target, false, None, pool.clone());

    assert_eq!(grab(&a.display, Target::Screen).unwrap().width(), 64);
    assert_eq!(shared.display().as_deref(), Some(a.display.as_str()));
    // Monitor 1 is resolved inside (the one RandR monitor = the screen).
    let m = grab(&a.display, Target::Monitor(1)).unwrap();
    assert_eq!((m.width(), m.height()), (64, 48));
    let r = Region::new(5, 6, 20, 10);
    assert_eq!(
        rgb_only(frame_bytes(&grab(&a.display, r.into()).unwrap())),
        pattern(r)
    );
    // A frame comes from the pool given, else from the default pool.
    let own = FramePool::default();
    let f = shared
        .grab(
            Some(&a.display),
            Target::Screen,
            false,
            Some(&own),
            pool.clone(),
        )
        .unwrap();
    assert!(f.lease().pool().unwrap().same_pool(&own));
    // Bad input keeps the connection and names the problem.
    let e = grab(&a.display, Target::Monitor(7)).unwrap_err();
    assert!(
        matches!(e, CaptureError::BadMonitor { index: 7, .. }),
        "{e}"
    );
    // Another display: reopened there.
    assert_eq!(grab(&b.display, Target::Screen).unwrap().width(), 32);
    assert_eq!(shared.display().as_deref(), Some(b.display.as_str()));

    // The server of the open connection dies: an error (no panic, no hang)...
    assert_eq!(grab(&a.display, Target::Screen).unwrap().width(), 64);
    let display = a.display.clone();
    a.kill();
    let e = grab(&display, Target::Screen).unwrap_err();
    assert!(
        matches!(e, CaptureError::Connect { .. } | CaptureError::X { .. }),
        "{e}"
    );
    // ...and once a server answers on that display again, the next grab reconnects.
    let Some(_again) = Xvfb::restart_at(&display, 40, 30) else {
        eprintln!("{display} was taken by another server: skipping the reconnect part");
        return;
    };
    assert_eq!(grab(&display, Target::Screen).unwrap().width(), 40);
    // A restart between two grabs is transparent: one reconnect and retry inside.
    drop(_again);
    let Some(_third) = Xvfb::restart_at(&display, 24, 8) else {
        eprintln!("{display} was taken by another server: skipping the restart part");
        return;
    };
    assert_eq!(grab(&display, Target::Screen).unwrap().width(), 24);
    shared.close();
    assert_eq!(shared.display(), None);
}

/// A small deterministic PRNG (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % n as u64) as u32
    }
    /// A random rectangle inside `w`×`h`, at most `max` on each side.
    fn rect(&mut self, w: u32, h: u32, max: u32) -> Region {
        let rw = 1 + self.below(max.min(w));
        let rh = 1 + self.below(max.min(h));
        Region::new(
            self.below(w - rw + 1) as i32,
            self.below(h - rh + 1) as i32,
            rw,
            rh,
        )
    }
}

/// Every pixel that differs between `a` and `b` (both `w` wide) lies in `damage`.
fn damage_covers(a: &[u8], b: &[u8], w: usize, damage: &[Region]) -> Result<(), String> {
    for (i, (pa, pb)) in a.chunks(4).zip(b.chunks(4)).enumerate() {
        if pa[..3] != pb[..3] {
            let (x, y) = ((i % w) as i32, (i / w) as i32);
            let inside = damage.iter().any(|r| {
                x >= r.left && y >= r.top && x < r.right() as i32 && y < r.bottom() as i32
            });
            if !inside {
                return Err(format!(
                    "pixel {x},{y} changed outside the damage {damage:?}"
                ));
            }
        }
    }
    Ok(())
}

/// The randomized incremental test: random drawings, scrolls and window moves,
/// frames held for a while (slots reused out of order), pool trims; every
/// incremental frame equals a full grab made right after it, and its damage
/// covers every pixel that changed since the previous frame.
fn incremental_matches_full_grabs(choice: BackendChoice, frames: usize, seed: u64) {
    let (w, h) = (320u32, 240u32);
    let Some(x) = Xvfb::start(w, h, &[]) else {
        return;
    };
    let d = Some(x.display.as_str());
    draw_full(&x, w, h);
    let pool = FramePool::default();
    let mut g = Grabber::open(d, choice, pool.clone()).unwrap();
    g.track_damage(true).unwrap();
    let mut reference = Grabber::open(d, choice, FramePool::default()).unwrap();
    let mut rng = Rng(seed);
    let mut held: Vec<framebus_core::Frame> = Vec::new();
    let mut window: Option<u32> = None;
    let mut previous: Option<(Region, Vec<u8>)> = None;
    let sub = Region::new(17, 9, 250, 200);
    for i in 0..frames {
        match rng.below(10) {
            0..=3 => {
                let r = rng.rect(w, h, 80);
                let px: Vec<u8> = (0..r.width * r.height * 4)
                    .map(|_| rng.next() as u8)
                    .collect();
                testing::put_image(d, r, &px).unwrap();
            }
            4 => {
                let r = rng.rect(w, h, 200);
                let (dx, dy) = (rng.below(w - r.width + 1), rng.below(h - r.height + 1));
                testing::copy_area(d, r, dx as i32, dy as i32).unwrap();
            }
            5 => {
                let r = rng.rect(w, h, 120);
                let id = testing::window(d, window, r, rng.next() as u32 & 0xffffff, false);
                window = Some(id.unwrap());
            }
            6 if window.is_some() => {
                testing::window(d, window.take(), sub, 0, true).unwrap();
            }
            _ => {} // nothing changes
        }
        // Mostly the screen; now and then a fixed sub-region (another layout).
        let region = if rng.below(8) == 0 {
            sub
        } else {
            Region::new(0, 0, w, h)
        };
        let f = g.grab(Some(region), false, None).unwrap();
        let damage = g.last_damage().unwrap().to_vec();
        let want = reference.grab(Some(region), false, None).unwrap();
        let got = rgb_only(frame_bytes(&f));
        assert!(
            got == rgb_only(frame_bytes(&want)),
            "frame {i} ({choice:?}, seed {seed}) differs from a full grab of {region}"
        );
        if let Some((r, prev)) = &previous {
            if *r == region {
                damage_covers(prev, &got, region.width as usize, &damage)
                    .unwrap_or_else(|e| panic!("frame {i}: {e}"));
            } else {
                assert_eq!(damage, vec![Region::new(0, 0, region.width, region.height)]);
            }
        }
        previous = Some((region, got));
        // Keep some frames a while so slots come back out of order.
        if rng.below(3) == 0 {
            held.push(f);
        }
        if held.len() > 4 || rng.below(5) == 0 {
            let k = rng.below(held.len().max(1) as u32) as usize;
            if k < held.len() {
                held.swap_remove(k);
            }
        }
        if rng.below(50) == 0 {
            pool.trim();
        }
    }
    if let Some(id) = window {
        testing::window(d, Some(id), sub, 0, true).unwrap();
    }
    let (partial, full) = g.grab_counts();
    assert!(
        partial > frames as u64 / 3,
        "partial {partial}, full {full}"
    );
}

#[test]
fn incremental_grabs_equal_full_grabs_through_random_changes_xshm() {
    incremental_matches_full_grabs(BackendChoice::Xshm, 1500, 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn incremental_grabs_equal_full_grabs_through_random_changes_xgetimage() {
    incremental_matches_full_grabs(BackendChoice::XGetImage, 400, 0x1234_5678_9abc_def1);
}

#[test]
fn a_pool_someone_else_acquires_from_forces_a_full_grab() {
    let Some(x) = Xvfb::start(64, 48, &[]) else {
        return;
    };
    let pool = FramePool::default();
    let mut g = Grabber::open(Some(&x.display), BackendChoice::Xshm, pool.clone()).unwrap();
    g.track_damage(true).unwrap();
    let r = Region::new(0, 0, 64, 48);
    drop(g.grab(Some(r), false, None).unwrap());
    drop(g.grab(Some(r), false, None).unwrap());
    assert_eq!(g.grab_counts(), (1, 1));
    // Someone writes into the free slot between our grabs.
    let mut lease = pool.acquire(64 * 48 * 4).unwrap();
    lease.get_mut().unwrap().fill(0x55);
    drop(lease);
    let f = g.grab(Some(r), false, None).unwrap();
    assert_eq!(
        g.grab_counts(),
        (1, 2),
        "the written slot is grabbed in full"
    );
    let want = frame_bytes(&f);
    drop(f);
    let patch = Region::new(3, 4, 5, 6);
    testing::put_image(Some(&x.display), patch, &pattern(patch)).unwrap();
    let f = g.grab(Some(r), false, None).unwrap();
    assert_eq!(g.grab_counts(), (2, 2), "a trusted slot again: partial");
    let got = frame_bytes(&f);
    for y in 0..48 {
        for x in 0..64 {
            let at = (y * 64 + x) * 4;
            let inside = (3..8).contains(&x) && (4..10).contains(&y);
            let expect = if inside {
                pattern(Region::new(x as i32, y as i32, 1, 1))
            } else {
                want[at..at + 4].to_vec()
            };
            assert_eq!(
                rgb_only(got[at..at + 4].to_vec()),
                rgb_only(expect),
                "{x},{y}"
            );
        }
    }
}

#[test]
fn on_change_capture_delivers_only_changes_with_their_damage() {
    let Some(x) = Xvfb::start(64, 48, &[]) else {
        return;
    };
    let mut g = Grabber::open(Some(&x.display), BackendChoice::Xshm, FramePool::default()).unwrap();
    g.track_damage(true).unwrap();
    let cap = Capture::start_on_change(
        g,
        CaptureConfig {
            target_fps: None,
            buffer: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let (first, damage) = cap.next_with_damage(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(damage, Some(vec![Region::new(0, 0, 64, 48)]));
    drop(first);
    // Nothing changes: no frame.
    let e = cap.next(Some(Duration::from_millis(200))).unwrap_err();
    assert!(matches!(e, CaptureError::Timeout(_)), "{e}");
    assert!(cap.stats().unchanged > 0);
    let r = Region::new(5, 7, 10, 3);
    testing::put_image(Some(&x.display), r, &pattern(r)).unwrap();
    let (f, damage) = cap.next_with_damage(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(damage, Some(vec![r]));
    let px = frame_bytes(&f);
    let at = (8 * 64 + 6) * 4;
    assert_eq!(
        rgb_only(px[at..at + 4].to_vec()),
        rgb_only(pattern(Region::new(6, 8, 1, 1)))
    );
    assert_eq!(cap.stats().captured, 2);
}
