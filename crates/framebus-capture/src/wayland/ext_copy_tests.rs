//! Tests of `ExtCopySource` against `framebus-wl-testcompositor` (a headless compositor
//! driven over stdin): pixels against its documented pattern, regions, scaled outputs, XBGR
//! conversion, damage, buffer damage (bytes the compositor copied), outputs coming and going,
//! and a compositor that dies mid-capture.
//!
//! The compositor binary comes from `$FRAMEBUS_WL_TESTCOMPOSITOR`, else from the workspace's
//! target directory (`cargo build -p framebus-wl-testcompositor`; `cargo test --workspace`
//! builds it); without it every test here says so and passes.

use super::*;
use crate::CaptureError;
use framebus_core::{Exhausted, FramePool, PoolConfig};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

fn compositor_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FRAMEBUS_WL_TESTCOMPOSITOR") {
        return Some(p.into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join("framebus-wl-testcompositor"))
        .find(|p| p.exists())
}

struct Comp {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    socket: String,
    dir: PathBuf,
}

impl Comp {
    /// The compositor with `args`, or None (and a message) when it is not built.
    fn start(args: &[&str]) -> Option<Comp> {
        let Some(bin) = compositor_bin() else {
            eprintln!(
                "framebus-wl-testcompositor not found: set FRAMEBUS_WL_TESTCOMPOSITOR or run \
                 `cargo build -p framebus-wl-testcompositor`; skipping"
            );
            return None;
        };
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fb-extcopy-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("wayland-test").to_str().unwrap().to_owned();
        let mut child = Command::new(&bin)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "READY\n", "{}", bin.display());
        Some(Comp {
            child,
            stdin,
            stdout,
            socket,
            dir,
        })
    }

    fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).unwrap();
        assert!(reply.starts_with("OK"), "{line} -> {reply}");
        reply.trim_end().to_owned()
    }

    fn bytes_written(&mut self) -> u64 {
        let reply = self.cmd("stats");
        reply
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("bytes_written="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("stats: {reply}"))
    }

    fn source(&self, pool: FramePool) -> ExtCopySource {
        let wl = WlConn::connect(&self.socket).expect("connect");
        ExtCopySource::open(wl, pool, None).expect("open")
    }
}

impl Drop for Comp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The compositor's documented pattern (its `state::pattern_rgba`), as BGRA bytes.
fn pattern(x: u32, y: u32, seed: u32) -> [u8; 4] {
    let h = x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ seed.wrapping_mul(83_492_791);
    [(h >> 16) as u8, (h >> 8) as u8, h as u8, 0xff]
}

fn px(f: &Frame, x: u32, y: u32) -> [u8; 4] {
    // SAFETY: frames from the source are read-only and the compositor is done with them.
    let data = unsafe { f.data() };
    let i = y as usize * f.layout().stride + x as usize * 4;
    data[i..i + 4].try_into().unwrap()
}

/// Every pixel of `f` equals `expect(x, y)`.
fn check(f: &Frame, expect: impl Fn(u32, u32) -> [u8; 4]) {
    let (w, h) = (f.layout().width as u32, f.layout().height as u32);
    for y in 0..h {
        for x in 0..w {
            assert_eq!(
                px(f, x, y),
                expect(x, y),
                "pixel {x},{y} of a {w}x{h} frame"
            );
        }
    }
}

fn size(f: &Frame) -> (usize, usize) {
    (f.layout().width, f.layout().height)
}

const BLACK: [u8; 4] = [0, 0, 0, 0xff];

#[test]
fn outputs_and_regions_match_the_pattern() {
    let Some(mut comp) = Comp::start(&[
        "--no-default-output",
        "--output",
        "A 64x48 0 0",
        "--output",
        "B 32x24 64 0",
    ]) else {
        return;
    };
    comp.cmd("pattern A 5");
    comp.cmd("pattern B 9");
    let mut src = comp.source(FramePool::default());
    let mons = src.monitors().unwrap();
    let names: Vec<(&str, Region)> = mons.iter().map(|m| (m.name.as_str(), m.region())).collect();
    assert_eq!(
        names,
        [
            ("all", Region::new(0, 0, 96, 48)),
            ("A", Region::new(0, 0, 64, 48)),
            ("B", Region::new(64, 0, 32, 24))
        ]
    );

    let a = src
        .grab_with(Some(Region::new(0, 0, 64, 48)), false, None, None)
        .unwrap();
    assert_eq!(size(&a), (64, 48));
    check(&a, |x, y| pattern(x, y, 5));
    assert!(!a.is_writable());
    // Nothing changed: the same slot again, nothing copied by anyone.
    let before = comp.bytes_written();
    let again = src
        .grab_with(Some(Region::new(0, 0, 64, 48)), false, None, None)
        .unwrap();
    assert_eq!(again.lease().slot_id(), a.lease().slot_id());
    assert_eq!(comp.bytes_written(), before);
    assert!(again.seq() > a.seq());

    // Into another pool: a copy of the output's slot, in a slot of that pool.
    let other = FramePool::default();
    let copy = src
        .grab_with(Some(Region::new(0, 0, 64, 48)), false, Some(&other), None)
        .unwrap();
    check(&copy, |x, y| pattern(x, y, 5));
    assert_eq!(other.stats().acquires, 1);
    assert_ne!(copy.lease().slot_id(), a.lease().slot_id());

    let inner = src
        .grab_with(Some(Region::new(10, 5, 20, 10)), false, None, None)
        .unwrap();
    assert_eq!(size(&inner), (20, 10));
    check(&inner, |x, y| pattern(x + 10, y + 5, 5));

    let b = src
        .grab_with(Some(Region::new(64, 0, 32, 24)), false, None, None)
        .unwrap();
    check(&b, |x, y| pattern(x, y, 9));

    // Across both outputs; below B nothing covers the region: zeros.
    let across = src
        .grab_with(Some(Region::new(50, 10, 40, 30)), false, None, None)
        .unwrap();
    assert_eq!(size(&across), (40, 30));
    check(&across, |x, y| {
        let (gx, gy) = (x + 50, y + 10);
        if gx < 64 {
            pattern(gx, gy, 5)
        } else if gy < 24 {
            pattern(gx - 64, gy, 9)
        } else {
            [0; 4]
        }
    });

    let desk = src.grab_with(None, false, None, None).unwrap();
    assert_eq!(size(&desk), (96, 48));
    assert_eq!(px(&desk, 70, 3), pattern(6, 3, 9));

    let err = src
        .grab_with(Some(Region::new(90, 40, 10, 10)), false, None, None)
        .unwrap_err();
    assert!(matches!(err, CaptureError::BadRegion { .. }), "{err}");
}

#[test]
fn scaled_outputs_give_physical_pixels() {
    let Some(mut comp) = Comp::start(&["--no-default-output", "--output", "S 64x48 0 0 2"]) else {
        return;
    };
    comp.cmd("pattern S 2");
    let mut src = comp.source(FramePool::default());
    assert_eq!(
        src.monitors().unwrap()[1].region(),
        Region::new(0, 0, 32, 24)
    );
    let whole = src.grab_with(None, false, None, None).unwrap();
    assert_eq!(size(&whole), (64, 48));
    check(&whole, |x, y| pattern(x, y, 2));
    let part = src
        .grab_with(Some(Region::new(4, 4, 8, 6)), false, None, None)
        .unwrap();
    assert_eq!(size(&part), (16, 12));
    check(&part, |x, y| pattern(x + 8, y + 8, 2));
}

#[test]
fn xbgr_frames_are_converted_to_bgra() {
    let Some(mut comp) = Comp::start(&[
        "--no-default-output",
        "--output",
        "A 40x30 0 0",
        "--format",
        "XBGR8888",
    ]) else {
        return;
    };
    comp.cmd("pattern A 4");
    let mut src = comp.source(FramePool::default());
    let f = src.grab_with(None, false, None, None).unwrap();
    check(&f, |x, y| pattern(x, y, 4));
    drop(f);
    // Later frames into reused slots stay right (RGBA slots are always copied whole).
    comp.cmd("fill A 3 4 5 6 102030ff");
    let f = src.grab_with(None, false, None, None).unwrap();
    check(&f, |x, y| {
        if (3..8).contains(&x) && (4..10).contains(&y) {
            [0x30, 0x20, 0x10, 0xff]
        } else {
            pattern(x, y, 4)
        }
    });
    drop(f);
    comp.cmd("fill A 0 0 1 1 ffffffff");
    let f = src
        .grab_with(Some(Region::new(0, 0, 10, 10)), false, None, None)
        .unwrap();
    assert_eq!(px(&f, 0, 0), [0xff; 4]);
    assert_eq!(px(&f, 5, 5), [0x30, 0x20, 0x10, 0xff]);
    assert_eq!(px(&f, 9, 9), pattern(9, 9, 4));
}

#[test]
fn new_constraints_reopen_the_session() {
    let Some(mut comp) = Comp::start(&["--no-default-output", "--output", "A 16x8 0 0"]) else {
        return;
    };
    let mut src = comp.source(FramePool::default());
    check(&src.grab_with(None, false, None, None).unwrap(), |_, _| {
        BLACK
    });
    comp.cmd("format XBGR8888");
    comp.cmd("pattern A 1");
    check(&src.grab_with(None, false, None, None).unwrap(), |x, y| {
        pattern(x, y, 1)
    });
}

#[test]
fn damage_is_reported_and_reused_slots_copy_only_what_is_stale() {
    let Some(mut comp) = Comp::start(&["--no-default-output", "--output", "A 64x48 0 0"]) else {
        return;
    };
    comp.cmd("pattern A 3");
    let full = 64 * 48 * 4;
    let pool = FramePool::new(PoolConfig {
        max_bytes: None,
        max_slots: Some(8),
        on_exhausted: Exhausted::Error,
        huge_pages: false,
    });
    let mut src = comp.source(pool);
    src.track_damage(true).unwrap();
    let whole = Region::new(0, 0, 64, 48);

    // First frame: copied whole, all damaged. A second slot is armed (fresh: whole damage).
    let f1 = src.grab_with(None, false, None, None).unwrap();
    assert_eq!(src.last_damage(), Some(&[whole][..]));
    assert_eq!(comp.bytes_written(), full);
    drop(f1);

    // A change completes the armed frame: the fresh slot is written whole.
    comp.cmd("fill A 0 0 10 10 ff0000ff");
    let f2 = src.grab_with(None, false, None, None).unwrap();
    assert_eq!(src.last_damage(), Some(&[Region::new(0, 0, 10, 10)][..]));
    assert_eq!(comp.bytes_written(), 2 * full);
    assert_eq!(px(&f2, 0, 0), [0, 0, 0xff, 0xff]);
    drop(f2);

    // The first slot came back: it lacks only the 10x10 fill, so the compositor copies that
    // plus the new 5x5 change, nothing else.
    comp.cmd("fill A 30 30 5 5 00ff00ff");
    let f3 = src.grab_with(None, false, None, None).unwrap();
    assert_eq!(src.last_damage(), Some(&[Region::new(30, 30, 5, 5)][..]));
    assert_eq!(comp.bytes_written(), 2 * full + (100 + 25) * 4);
    check(&f3, |x, y| {
        if x < 10 && y < 10 {
            [0, 0, 0xff, 0xff]
        } else if (30..35).contains(&x) && (30..35).contains(&y) {
            [0, 0xff, 0, 0xff]
        } else {
            pattern(x, y, 3)
        }
    });
    assert_eq!(
        src.grab_counts(),
        (2, 2),
        "(partial, full) copies asked of the compositor"
    );

    // Nothing changed: no damage, nothing copied, the same slot.
    let before = comp.bytes_written();
    let f4 = src.grab_with(None, false, None, None).unwrap();
    assert_eq!(src.last_damage(), Some(&[][..]));
    assert_eq!(f4.lease().slot_id(), f3.lease().slot_id());
    assert_eq!(comp.bytes_written(), before);

    // Damage of a region is clipped to it and in its coordinates.
    let r = Region::new(20, 20, 20, 20);
    src.grab_with(Some(r), false, None, None).unwrap();
    assert_eq!(
        src.last_damage(),
        Some(&[Region::new(0, 0, 20, 20)][..]),
        "a new region: all of it"
    );
    comp.cmd("fill A 35 15 10 10 0000ffff");
    src.grab_with(Some(r), false, None, None).unwrap();
    assert_eq!(src.last_damage(), Some(&[Region::new(15, 0, 5, 5)][..]));

    // Not incremental: slots are copied whole again (once the frame armed before has
    // completed, with what it was armed with).
    src.track_damage(false).unwrap();
    drop((f3, f4));
    comp.cmd("fill A 1 1 1 1 ffffffff");
    src.grab_with(None, false, None, None).unwrap();
    let before = comp.bytes_written();
    comp.cmd("fill A 2 2 1 1 ffffffff");
    src.grab_with(None, false, None, None).unwrap();
    comp.cmd("fill A 3 3 1 1 ffffffff");
    src.grab_with(None, false, None, None).unwrap();
    assert_eq!(comp.bytes_written() - before, 2 * full);
}

#[test]
fn grab_when_changed_waits_for_a_change_inside_the_region() {
    let Some(mut comp) = Comp::start(&["--no-default-output", "--output", "A 64x48 0 0"]) else {
        return;
    };
    let mut src = comp.source(FramePool::default());
    let r = Region::new(0, 0, 16, 16);
    let first = src
        .grab_when_changed(r, false, None, None, Duration::from_millis(100))
        .unwrap();
    assert!(first.is_some(), "the first frame of a region always comes");
    assert!(src
        .grab_when_changed(r, false, None, None, Duration::from_millis(200))
        .unwrap()
        .is_none());
    comp.cmd("fill A 40 40 4 4 ffffffff");
    assert!(
        src.grab_when_changed(r, false, None, None, Duration::from_millis(200))
            .unwrap()
            .is_none(),
        "a change outside the region does not count"
    );
    // A change while waiting wakes the wait.
    let t0 = Instant::now();
    let frame = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            comp.cmd("fill A 2 3 4 5 ff0000ff");
        });
        src.grab_when_changed(r, false, None, None, Duration::from_secs(10))
            .unwrap()
    });
    let frame = frame.expect("woken by the change");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(px(&frame, 2, 3), [0, 0, 0xff, 0xff]);
}

#[test]
fn outputs_come_and_go_while_the_source_lives() {
    let Some(mut comp) = Comp::start(&["--no-default-output", "--output", "A 32x24 0 0"]) else {
        return;
    };
    let mut src = comp.source(FramePool::default());
    src.grab_with(None, false, None, None).unwrap();
    comp.cmd("output B 16x8 32 0");
    comp.cmd("fill B 0 0 16 8 ffffffff");
    let mons = src.monitors().unwrap();
    assert_eq!(mons.len(), 3, "{mons:?}");
    let b = Region::new(32, 0, 16, 8);
    check(
        &src.grab_with(Some(b), false, None, None).unwrap(),
        |_, _| [0xff; 4],
    );
    comp.cmd("remove B");
    assert_eq!(src.monitors().unwrap().len(), 2);
    let err = src.grab_with(Some(b), false, None, None).unwrap_err();
    assert!(matches!(err, CaptureError::BadRegion { .. }), "{err}");
    check(&src.grab_with(None, false, None, None).unwrap(), |_, _| {
        BLACK
    });
    // The output with a session and a frame in flight goes: no outputs, an error at once.
    comp.cmd("remove A");
    let t0 = Instant::now();
    let err = src.grab_with(None, false, None, None).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(err.to_string().contains("no outputs"), "{err}");
    comp.cmd("output A 8x8 0 0");
    check(&src.grab_with(None, false, None, None).unwrap(), |_, _| {
        BLACK
    });
}

#[test]
fn a_compositor_killed_mid_capture_is_an_error_at_once() {
    let Some(mut comp) = Comp::start(&["--no-default-output", "--output", "A 32x24 0 0"]) else {
        return;
    };
    let mut src = comp.source(FramePool::default());
    let r = Region::new(0, 0, 32, 24);
    src.grab_when_changed(r, false, None, None, Duration::from_secs(1))
        .unwrap();
    let t0 = Instant::now();
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            comp.child.kill().unwrap();
        });
        src.grab_when_changed(r, false, None, None, Duration::from_secs(30))
    });
    let err = result.expect_err("the compositor is gone");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    assert!(matches!(err, CaptureError::Wayland { .. }), "{err}");
    let t0 = Instant::now();
    assert!(src.grab_with(None, false, None, None).is_err());
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[test]
fn rotated_and_flipped_outputs_are_turned_upright() {
    // R: a 40x30 buffer turned 90° (transform 1); F: 20x10 flipped upside down (transform 6:
    // flipped + 180°). The compositor's pattern is in buffer pixels.
    let Some(mut comp) = Comp::start(&[
        "--no-default-output",
        "--output",
        "A 16x8 0 0",
        "--output",
        "R 40x30 16 0 1 1",
        "--output",
        "F 20x10 0 40 1 6",
    ]) else {
        return;
    };
    comp.cmd("pattern A 3");
    comp.cmd("pattern R 7");
    comp.cmd("pattern F 8");
    let mut src = comp.source(FramePool::default());
    src.track_damage(true).unwrap();
    let mons = src.monitors().unwrap();
    assert_eq!(
        mons[2].region(),
        Region::new(16, 0, 30, 40),
        "logical size is turned"
    );
    assert_eq!(mons[3].region(), Region::new(0, 40, 20, 10));
    // transform 1: upright (x, y) is buffer (y, bh - 1 - x); transform 6: (x, bh - 1 - y)
    let r = src
        .grab_with(Some(mons[2].region()), false, None, None)
        .unwrap();
    assert_eq!(size(&r), (30, 40));
    check(&r, |x, y| pattern(y, 29 - x, 7));
    let f = src
        .grab_with(Some(mons[3].region()), false, None, None)
        .unwrap();
    assert_eq!(size(&f), (20, 10));
    check(&f, |x, y| pattern(x, 9 - y, 8));
    // A region inside the turned output is cut from its upright picture.
    let inner = src
        .grab_with(Some(Region::new(16 + 5, 7, 10, 20)), false, None, None)
        .unwrap();
    check(&inner, |x, y| pattern(y + 7, 29 - (x + 5), 7));
    // The whole desktop: all three upright, side by side.
    let desk = src.grab_with(None, false, None, None).unwrap();
    assert_eq!(size(&desk), (46, 50));
    assert_eq!(px(&desk, 16 + 3, 11), pattern(11, 29 - 3, 7));
    assert_eq!(px(&desk, 4, 40 + 2), pattern(4, 9 - 2, 8));
    assert_eq!(px(&desk, 2, 1), pattern(2, 1, 3));
    drop((r, f, inner, desk));

    // Damage in buffer pixels comes out upright: buffer rows 2..4 (x 30..40) of R are
    // upright columns 26..28 (y 30..40).
    // (A frame of another region has whole-frame damage: grab A first.)
    comp.cmd("fill A 0 0 1 1 ffffffff");
    let white = px(
        &src.grab_with(Some(mons[1].region()), false, None, None)
            .unwrap(),
        0,
        0,
    );
    let r = src
        .grab_with(Some(mons[2].region()), false, None, None)
        .unwrap();
    drop(r);
    comp.cmd("fill R 30 2 10 2 ffffffff");
    let r = src
        .grab_with(Some(mons[2].region()), false, None, None)
        .unwrap();
    assert_eq!(src.last_damage(), Some(&[Region::new(26, 30, 2, 10)][..]));
    check(&r, |x, y| {
        if (26..28).contains(&x) && y >= 30 {
            white
        } else {
            pattern(y, 29 - x, 7)
        }
    });
    // Later frames into reused slots stay right.
    for i in 0..6u32 {
        drop(r.clone());
        comp.cmd(&format!("fill R {i} {i} 1 1 ffffffff"));
        let again = src
            .grab_with(Some(mons[2].region()), false, None, None)
            .unwrap();
        assert_eq!(px(&again, 29 - i, i), white, "frame {i}");
        assert_eq!(px(&again, 0, 39), pattern(39, 29, 7));
    }
}

#[test]
fn a_compositor_that_stops_answering_is_an_error_after_the_frame_timeout() {
    let Some(mut comp) = Comp::start(&["--no-default-output", "--output", "A 16x8 0 0"]) else {
        return;
    };
    let mut src = comp.source(FramePool::default());
    src.grab_with(None, false, None, None).unwrap();
    // Frozen (from its "OK" on) for longer than FRAME_TIMEOUT.
    let freeze = FRAME_TIMEOUT + Duration::from_secs(2);
    comp.cmd(&format!("freeze {}", freeze.as_millis()));
    let t0 = Instant::now();
    let err = src.grab_with(None, false, None, None).unwrap_err();
    let took = t0.elapsed();
    assert!(
        took >= FRAME_TIMEOUT - Duration::from_millis(200) && took < freeze,
        "{took:?}"
    );
    assert!(err.to_string().contains("did not answer"), "{err}");
    comp.cmd("stats"); // answered once the freeze is over
                       // Answering again: grabs work again.
    check(&src.grab_with(None, false, None, None).unwrap(), |_, _| {
        BLACK
    });
}

#[test]
fn an_acquire_by_someone_else_makes_the_next_copy_whole() {
    let Some(mut comp) = Comp::start(&["--no-default-output", "--output", "A 64x48 0 0"]) else {
        return;
    };
    comp.cmd("pattern A 6");
    let full = 64 * 48 * 4;
    let pool = FramePool::default();
    let mut src = comp.source(pool.clone());
    drop(src.grab_with(None, false, None, None).unwrap());
    comp.cmd("fill A 0 0 10 10 ff0000ff");
    drop(src.grab_with(None, false, None, None).unwrap());
    assert_eq!(comp.bytes_written(), 2 * full);
    // Someone else takes a slot from the same pool: a free slot may have been written.
    drop(pool.acquire(4096).unwrap());
    comp.cmd("fill A 30 30 5 5 00ff00ff");
    drop(src.grab_with(None, false, None, None).unwrap());
    assert_eq!(
        comp.bytes_written(),
        2 * full + (100 + 25) * 4,
        "armed before the acquire"
    );
    comp.cmd("fill A 1 40 1 1 ffffffff");
    let f = src.grab_with(None, false, None, None).unwrap();
    assert_eq!(
        comp.bytes_written(),
        3 * full + (100 + 25) * 4,
        "armed after it: copied whole"
    );
    check(&f, |x, y| {
        if x < 10 && y < 10 {
            [0, 0, 0xff, 0xff]
        } else if (30..35).contains(&x) && (30..35).contains(&y) {
            [0, 0xff, 0, 0xff]
        } else if (x, y) == (1, 40) {
            [0xff; 4]
        } else {
            pattern(x, y, 6)
        }
    });
}

#[test]
fn slots_pools_and_fds_stay_flat_over_many_grabs() {
    let Some(mut comp) = Comp::start(&["--no-default-output", "--output", "A 64x48 0 0"]) else {
        return;
    };
    let pool = FramePool::default();
    let mut src = comp.source(pool.clone());
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let mut baseline = None;
    for i in 0..600u32 {
        if i % 2 == 0 {
            comp.cmd(&format!("fill A {} {} 3 3 {:06x}ff", i % 60, i % 40, i));
        }
        let region = match i % 3 {
            0 => None,
            1 => Some(Region::new(5, 5, 20, 20)),
            _ => Some(Region::new(0, 0, 64, 48)),
        };
        let f = src.grab_with(region, false, None, None).unwrap();
        if i % 2 == 0 {
            // The fill's top-left pixel, where the frame shows it.
            let (left, top) = region.map_or((0, 0), |r| (r.left as u32, r.top as u32));
            let (x, y) = ((i % 60).checked_sub(left), (i % 40).checked_sub(top));
            if let (Some(x), Some(y)) = (x, y) {
                if x < f.layout().width as u32 && y < f.layout().height as u32 {
                    let b = i.to_be_bytes();
                    assert_eq!(px(&f, x, y), [b[3], b[2], b[1], 0xff], "grab {i}");
                }
            }
        }
        drop(f);
        if i == 100 {
            baseline = Some(fds());
        }
    }
    assert!(
        fds() <= baseline.unwrap() + 2,
        "fds grew: {} -> {}",
        baseline.unwrap(),
        fds()
    );
    assert!(
        src.attached_segments() <= 4,
        "{} wl_shm pools",
        src.attached_segments()
    );
    assert!(
        src.tracked_slots() <= 4,
        "{} slots tracked",
        src.tracked_slots()
    );
    assert!(
        pool.stats().slots <= 4,
        "{} slots mapped",
        pool.stats().slots
    );
}
