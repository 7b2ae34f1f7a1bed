//! End-to-end tests against an Xvfb each test starts (skipped when Xvfb is
//! not installed): pixel-exact captures of a drawn pattern on both backends,
//! regions on every edge, bad regions, monitors, slot reuse and segment
//! detaching, screen resize, continuous capture.

use framebus_capture::{
    testing, Backend, BackendChoice, Capture, CaptureConfig, CaptureError, Grabber, Region,
};
use framebus_core::{FramePool, PoolConfig};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let (r, wr) = rustix::pipe::pipe().expect("pipe");
        let spawned = Command::new("Xvfb")
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
            panic!("Xvfb did not report a display number");
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
    let mut size = (0, 0);
    for _ in 0..100 {
        size = g.screen_size().unwrap();
        if size == (400, 300) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(size, (400, 300));
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
        std::thread::sleep(Duration::from_millis(15)); // slower than 200 fps
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
    assert!((45..=55).contains(&n), "{n} frames in one second at 50 fps");
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
        std::thread::sleep(Duration::from_millis(5));
        assert!(cap.stats().buffered <= 1);
    }
    let s = cap.stats();
    assert_eq!(s.dropped, 0);
    assert!(s.captured <= 11, "{s:?}");
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
    std::thread::sleep(Duration::from_millis(50));
    assert!(cap.next(Some(Duration::from_millis(50))).is_err());
    let t0 = Instant::now();
    cap.stop();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_ne!(a.lease().slot_id(), b.lease().slot_id());
}
