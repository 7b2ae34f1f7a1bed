//! Send→receive latency of the shared-memory channel with no Python in the way:
//! this binary publishes paced frames and re-runs itself as the subscriber.
//!
//! `cargo run --release -p framebus-channel --example handoff_latency -- [W H SPIN RATE N]`
//! (SPIN: 0 = sleep, µs to busy-wait, or `auto` for adaptive spinning).
//!
//! The publisher stamps CLOCK_MONOTONIC into each frame's first bytes right before
//! `send`; the subscriber reads the clock as soon as `recv` returns.

use std::time::Duration;

use framebus_channel::wire::monotonic_ns;
use framebus_channel::{Mode, OnFull, Publisher, PublisherConfig, Spin, Subscriber};
use framebus_core::PixelFormat;

fn pct(xs: &mut [u64], p: f64) -> f64 {
    xs.sort_unstable();
    xs[((xs.len() - 1) as f64 * p / 100.0).round() as usize] as f64 / 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--subscriber") {
        subscriber(&args[2], &args[3]);
        return;
    }
    let num = |i: usize, d: u64| args.get(i).map_or(d, |s| s.parse().unwrap());
    let (w, h, rate, n) = (num(1, 1920), num(2, 1080), num(4, 30), num(5, 300));
    let spin = args.get(3).cloned().unwrap_or_else(|| "0".into());
    let name = format!("latency-{}", std::process::id());
    let cfg = PublisherConfig {
        mode: Mode::Lossless { depth: 2 },
        on_full: OnFull::Block(None),
        ..PublisherConfig::default()
    };
    let publisher = Publisher::new(&name, cfg).expect("publisher");
    // FRAMEBUS_LATENCY_SUBSCRIBER names another program to run as the subscriber
    // (it gets the channel name and the spin time, like `--subscriber`).
    let mut cmd = match std::env::var_os("FRAMEBUS_LATENCY_SUBSCRIBER") {
        Some(prog) => std::process::Command::new(prog),
        None => {
            let mut c = std::process::Command::new(std::env::current_exe().unwrap());
            c.arg("--subscriber");
            c
        }
    };
    let child = cmd
        .args([&name, &spin])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("subscriber");
    publisher
        .wait_for_subscribers(1, Duration::from_secs(10))
        .expect("subscriber joined");
    let start = std::time::Instant::now();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(d) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(d);
        }
        let mut frame = publisher
            .acquire(w as usize, h as usize, PixelFormat::Bgra)
            .expect("acquire");
        let data = frame.data_mut().expect("writable");
        data[..8].copy_from_slice(&monotonic_ns().to_ne_bytes());
        publisher.send(&frame).expect("send");
    }
    publisher.close();
    let out = child.wait_with_output().expect("subscriber output");
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

fn subscriber(name: &str, spin: &str) {
    let mut sub = Subscriber::connect(name, Duration::from_secs(10)).expect("connect");
    sub.set_spin(match spin {
        "auto" => Spin::Adaptive,
        "0" => Spin::Off,
        us => Spin::For(Duration::from_micros(
            us.parse().expect("SPIN_US: µs or auto"),
        )),
    });
    let mut lat = Vec::new();
    while let Ok(frame) = sub.recv(Some(Duration::from_secs(10))) {
        let t1 = monotonic_ns();
        // SAFETY: the frame is a live read-only mapping of at least 8 bytes.
        let sent = unsafe { std::ptr::read_unaligned(frame.as_ptr() as *const u64) };
        lat.push(t1.saturating_sub(sent));
    }
    let skip = lat.len().min(10);
    let lat = &mut lat[skip..];
    println!(
        "frames {} spin {spin}: send→recv p50 {:.1} µs p99 {:.1} µs max {:.1} µs",
        lat.len(),
        pct(lat, 50.0),
        pct(lat, 99.0),
        pct(lat, 100.0)
    );
}
