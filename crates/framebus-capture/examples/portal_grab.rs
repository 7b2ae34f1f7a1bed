//! Grab through the ScreenCast portal and write what came back, for the
//! portal tests (tests/test_portal.py) and for trying the portal by hand.
//!
//! ```text
//! cargo run -p framebus-capture --example portal_grab -- OUT [--hold N] [--no-restore]
//!     [--settle MS] [--frames N] [--repeats R]
//! ```
//! Writes `OUT.bgra` (the whole stream, rows packed), `OUT.crop.bgra` (the
//! region 10,20 100x50) and prints one JSON line: size, counters, whether a
//! restore token was used, the token's path, the backend reason, and the
//! time of a grab of the newest frame read once (a u64 sum), whole
//! (`grab_us`: zero copy while buffers last) and one row short (`copy_us`:
//! one copy): the median of `--repeats R` (1) runs of `--frames N` (50).
//! `--hold N` grabs N more frames while holding all of them (zero copy while
//! the producer has buffers to spare, copies after that); `--settle MS` waits
//! until no new frame came for MS ms before the first grab that is written.

use framebus_capture::{PortalOptions, PortalSource, Region};
use framebus_core::{FramePool, PoolConfig};
use std::time::Duration;

fn packed(frame: &framebus_core::Frame) -> Vec<u8> {
    let row = frame.width() * 4;
    // SAFETY: a read-only captured frame; nothing writes it while we read.
    let data = unsafe { frame.data() };
    (0..frame.height())
        .flat_map(|y| {
            data[y * frame.stride()..y * frame.stride() + row]
                .iter()
                .copied()
        })
        .collect()
}

/// Read every byte once (a wrapping u64 sum), as the benchmarks' consumers do.
fn sum(frame: &framebus_core::Frame) -> u64 {
    // SAFETY: a read-only captured frame; nothing writes it while we read.
    let data = unsafe { frame.data() };
    data.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
        .fold(0u64, u64::wrapping_add)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first().cloned() else {
        eprintln!(
            "usage: portal_grab OUT [--hold N] [--no-restore] [--settle MS] [--frames N] [--repeats R]"
        );
        std::process::exit(2);
    };
    let hold: usize = args
        .iter()
        .position(|a| a == "--hold")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let num = |flag: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(default)
    };
    let (frames, repeats) = (num("--frames", 50), num("--repeats", 1));
    let settle: u64 = args
        .iter()
        .position(|a| a == "--settle")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let opts = PortalOptions {
        restore: !args.iter().any(|a| a == "--no-restore"),
        portal_timeout: Duration::from_secs(20),
        first_frame_timeout: Duration::from_secs(10),
        ..PortalOptions::default()
    };
    let t0 = std::time::Instant::now();
    let mut src = match PortalSource::open(FramePool::new(PoolConfig::default()), opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("portal_grab: {e}");
            std::process::exit(1);
        }
    };
    let mut run = || -> framebus_capture::Result<()> {
        let first = src.grab(None, false, None, None)?;
        let open_ms = t0.elapsed().as_secs_f64() * 1e3;
        // --settle: until no new frame for that long (at most 20 s), then the newest
        let first = if settle > 0 {
            let t = std::time::Instant::now();
            while src.wait_for_change(Duration::from_millis(settle))?
                && t.elapsed() < Duration::from_secs(20)
            {
                drop(src.grab(None, false, None, None)?);
            }
            drop(first);
            src.grab(None, false, None, None)?
        } else {
            first
        };
        std::fs::write(format!("{out}.bgra"), packed(&first)).map_err(|e| {
            framebus_capture::CaptureError::BadArgument(format!("writing {out}.bgra: {e}"))
        })?;
        let crop = src.grab(Some(Region::new(10, 20, 100, 50)), false, None, None)?;
        std::fs::write(format!("{out}.crop.bgra"), packed(&crop)).map_err(|e| {
            framebus_capture::CaptureError::BadArgument(format!("writing {out}.crop.bgra: {e}"))
        })?;
        let mut held = vec![first];
        for _ in 0..hold {
            let _ = src.wait_for_change(Duration::from_millis(100))?;
            held.push(src.grab(None, false, None, None)?);
        }
        let at_grab: Vec<Vec<u8>> = held.iter().map(packed).collect();
        std::thread::sleep(Duration::from_millis(300));
        // frames held meanwhile still show what they showed (no producer wrote them)
        let same = held.iter().zip(&at_grab).all(|(f, p)| packed(f) == *p);
        let foreign = held
            .iter()
            .filter(|f| f.lease().slot().is_foreign())
            .count();
        let s = src.stats();
        let during = (s.held, s.buffers);
        drop(held);
        let after = src.stats().held;
        // timing: grabs of the newest frame, one at a time, each read once;
        // the median of `repeats` runs of `frames` grabs
        let (w, h) = src.screen_size()?;
        let mut check = 0u64;
        let (mut zero, mut copy) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            let t = std::time::Instant::now();
            for _ in 0..frames {
                check = check.wrapping_add(sum(&src.grab(None, false, None, None)?));
            }
            zero.push(t.elapsed().as_secs_f64() * 1e6 / frames as f64);
            // the copy path: a region one row short of the stream is one copy
            let t = std::time::Instant::now();
            for _ in 0..frames {
                let f = src.grab(Some(Region::new(0, 0, w, h - 1)), false, None, None)?;
                check = check.wrapping_add(sum(&f));
            }
            copy.push(t.elapsed().as_secs_f64() * 1e6 / frames as f64);
        }
        std::hint::black_box(check);
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (grab_us, copy_us) = (median(zero), median(copy));
        let s2 = src.stats();
        println!(
            "{{\"width\": {}, \"height\": {}, \"zero_copy\": {}, \"copies\": {}, \"buffers\": {}, \
             \"held_during\": {}, \"held_after\": {}, \"foreign_frames\": {}, \"identical\": {}, \
             \"restored\": {}, \"token_path\": {:?}, \"reason\": {:?}, \"open_ms\": {:.1}, \
             \"grab_us\": {:.1}, \"copy_us\": {:.1}, \"zero_copy_total\": {}, \"copies_total\": {}}}",
            src.screen_size()?.0,
            src.screen_size()?.1,
            s.zero_copy,
            s.copies,
            during.1,
            during.0,
            after,
            foreign,
            same,
            src.restored_with_token(),
            PortalSource::token_path().map(|p| p.display().to_string()).unwrap_or_default(),
            src.backend_reason().unwrap_or(""),
            open_ms,
            grab_us,
            copy_us,
            s2.zero_copy,
            s2.copies,
        );
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("portal_grab: {e}");
        std::process::exit(1);
    }
}
