//! `framebus bridge --from SRC --to DST`: frames from a local channel, the
//! screen or a Zenoh key to a Zenoh key or a local channel, so programs that
//! use the local channel go across machines unchanged (docs/zenoh.md).
//!
//! One loop on this thread: take the newest frame of the source (waiting at
//! most 100 ms, so a stop is seen), send it on, and print a status line
//! (frames/s, MB/s, age, drops) once a second. No frame is copied here: a
//! channel's frame goes to Zenoh as the slot's bytes, a Zenoh frame lands in
//! a slot that the channel then shares.

use crate::view::source::{Next, Source, SourceSpec};
use crate::Stop;
use clap::Args;
use framebus_core::Frame;
use framebus_zenoh::{ConfigSource, Encoding, Mode, ZenohError};
use std::io::Write;
use std::time::{Duration, Instant};

/// Options of `framebus bridge`.
#[derive(Args, Debug)]
pub struct BridgeArgs {
    /// Where frames come from: channel:NAME, zenoh:KEY or screen:MONITOR.
    #[arg(long)]
    from: String,
    /// Where frames go: zenoh:KEY or channel:NAME.
    #[arg(long)]
    to: String,
    /// Zenoh configuration: JSON5 text (starting with '{') or a file.
    #[arg(long)]
    config: Option<String>,
    /// How frames travel: latest (drop under congestion) or lossless.
    #[arg(long, default_value = "latest")]
    mode: String,
    /// to zenoh: raw, lz4, zstd or jpeg.
    #[arg(long, default_value = "raw")]
    encoding: String,
    /// jpeg quality (1..100) or zstd level (1..22).
    #[arg(long)]
    quality: Option<i64>,
    /// screen: capture rate in frames per second.
    #[arg(short = 'r', long, default_value_t = 30.0)]
    fps: f64,
    /// screen: the display, an X display (":1") or a Wayland socket ("wayland-1"); default $WAYLAND_DISPLAY, else $DISPLAY.
    #[arg(short = 'd', long)]
    display: Option<String>,
    /// channel: seconds to wait for the publisher to appear.
    #[arg(long, default_value_t = 5.0)]
    wait: f64,
    /// Stop after this many frames (default: run until Ctrl-C).
    #[arg(short = 'n', long)]
    frames: Option<u64>,
    /// No status line.
    #[arg(short = 'q', long)]
    quiet: bool,
}

enum From {
    Local(Source),
    Zenoh(Box<framebus_zenoh::Subscriber>),
}

enum To {
    Zenoh(framebus_zenoh::Publisher),
    Channel(framebus_channel::Publisher),
}

const SLICE: Duration = Duration::from_millis(100);

fn endpoint(s: &str) -> Result<(&str, &str), String> {
    s.split_once(':')
        .ok_or_else(|| format!("{s:?}: expected KIND:NAME (channel:, zenoh:, screen:)"))
}

impl From {
    fn next(&mut self) -> Result<Next, String> {
        match self {
            From::Local(src) => src.next(SLICE),
            From::Zenoh(sub) => match sub.recv(Some(SLICE)) {
                Ok(f) => Ok(Next::Frame(f)),
                Err(e) if e.is_timeout() => Ok(Next::Idle),
                Err(ZenohError::Closed { .. }) => {
                    std::thread::sleep(SLICE);
                    Ok(Next::NoPublisher)
                }
                Err(e) => Err(e.to_string()),
            },
        }
    }

    fn drops(&self) -> u64 {
        match self {
            From::Local(src) => src.drops(),
            From::Zenoh(sub) => sub.stats().skipped,
        }
    }
}

impl To {
    fn send(&self, f: &Frame) -> Result<(), String> {
        match self {
            To::Zenoh(p) => p.send(f).map(drop).map_err(|e| e.to_string()),
            To::Channel(p) => p.send(f).map(drop).map_err(|e| e.to_string()),
        }
    }
}

pub fn run(args: BridgeArgs, stop: &Stop) -> Result<(), String> {
    let config = args
        .config
        .as_deref()
        .map_or(ConfigSource::Default, ConfigSource::from_text_or_path);
    let mode = Mode::parse(&args.mode).map_err(|e| format!("--mode: {e}"))?;
    let (to_kind, to_name) = endpoint(&args.to)?;
    let to = match to_kind {
        "zenoh" => {
            let encoding = Encoding::parse(&args.encoding, args.quality)
                .map_err(|e| format!("--encoding: {e}"))?;
            To::Zenoh(
                framebus_zenoh::Publisher::new(
                    to_name,
                    framebus_zenoh::PublisherConfig {
                        mode,
                        encoding,
                        config: config.clone(),
                        pool: None,
                        local: true,
                    },
                )
                .map_err(|e| e.to_string())?,
            )
        }
        "channel" => {
            if args.encoding != "raw" {
                return Err("--encoding only applies to --to zenoh:KEY".into());
            }
            let mode = match mode {
                Mode::Latest => framebus_channel::Mode::Latest,
                Mode::Lossless => framebus_channel::Mode::Lossless { depth: 4 },
            };
            To::Channel(
                framebus_channel::Publisher::new(
                    to_name,
                    framebus_channel::PublisherConfig {
                        mode,
                        ..Default::default()
                    },
                )
                .map_err(|e| e.to_string())?,
            )
        }
        other => {
            return Err(format!(
                "--to {:?}: unknown kind {other:?} (zenoh:KEY or channel:NAME)",
                args.to
            ))
        }
    };
    let (from_kind, from_name) = endpoint(&args.from)?;
    let mut from = match from_kind {
        "zenoh" => From::Zenoh(Box::new(
            framebus_zenoh::Subscriber::new(from_name, &config, None).map_err(|e| e.to_string())?,
        )),
        "channel" | "screen" => {
            let spec = SourceSpec::parse(&args.from).map_err(|e| format!("--from: {e}"))?;
            if !(args.wait.is_finite() && args.wait >= 0.0) {
                return Err(format!("--wait {}: must be >= 0", args.wait));
            }
            From::Local(Source::open(
                &spec,
                Duration::from_secs_f64(args.wait.min(1e9)),
                args.fps,
                args.display.as_deref(),
                false,
                stop,
            )?)
        }
        other => {
            return Err(format!(
                "--from {:?}: unknown kind {other:?} (channel:NAME, zenoh:KEY or screen:MONITOR)",
                args.from
            ))
        }
    };
    if matches!((&from, &to), (From::Zenoh(_), To::Zenoh(_))) {
        return Err("--from zenoh: and --to zenoh: would only loop frames through Zenoh".into());
    }
    let (mut frames, mut window_frames, mut window_bytes) = (0u64, 0u64, 0u64);
    let mut age_ms = 0.0;
    let mut waiting = false;
    let mut window = Instant::now();
    let mut err = std::io::stderr();
    while !stop.is_set() && args.frames.is_none_or(|n| frames < n) {
        match from.next()? {
            Next::Frame(f) => {
                waiting = false;
                to.send(&f)?;
                frames += 1;
                window_frames += 1;
                window_bytes += f.byte_len() as u64;
                age_ms =
                    framebus_core::monotonic_ns().saturating_sub(f.timestamp_ns()) as f64 / 1e6;
            }
            Next::Idle => {}
            Next::NoPublisher => waiting = true,
        }
        let dt = window.elapsed();
        if dt >= Duration::from_secs(1) && !args.quiet {
            let s = dt.as_secs_f64();
            let _ = write!(
                err,
                "\r{} → {}: {:.1} fps  {:.1} MB/s  age {:.1} ms  drops {}  frames {}{}   ",
                args.from,
                args.to,
                window_frames as f64 / s,
                window_bytes as f64 / s / 1e6,
                age_ms,
                from.drops(),
                frames,
                if waiting {
                    "  (waiting for a publisher)"
                } else {
                    ""
                }
            );
            let _ = err.flush();
            (window, window_frames, window_bytes) = (Instant::now(), 0, 0);
        }
    }
    if !args.quiet {
        let _ = writeln!(
            err,
            "\nframebus bridge: {frames} frames, {} dropped",
            from.drops()
        );
    }
    match to {
        To::Zenoh(p) => p.close(),
        To::Channel(p) => p.close(),
    }
    Ok(())
}
