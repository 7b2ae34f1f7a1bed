//! `framebus record`: screen (monitor or region) → `VideoWriter` at a target fps,
//! for N seconds or until Ctrl-C, with a progress line.
//!
//! Timing: one frame is written per tick of `1/fps`, the newest captured frame at
//! that moment (a repeat of the previous one when the screen produced none), so
//! the file's frame count and duration match the wall clock (`ffprobe` shows
//! `duration × fps` frames). Captured frames go to FFmpeg with no copy: the
//! capture thread fills pool slots through MIT-SHM and the writer feeds FFmpeg
//! from those same slots (vmsplice), each held by its lease until consumed.

use clap::Args;
use framebus_capture::{BackendChoice, Capture, CaptureConfig, Grabber, Region};
use framebus_core::{FramePool, PoolConfig};
use framebus_pipe::{VideoConfig, VideoWriter};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of `framebus record`.
#[derive(Args, Debug)]
pub struct RecordArgs {
    /// Output video file (the container follows the extension).
    #[arg(short = 'o', long, default_value = "framebus-record.mp4")]
    output: PathBuf,
    /// Monitor to record: 0 = all monitors together, N = monitor N (mss numbering).
    #[arg(short = 'm', long, default_value_t = 1)]
    monitor: usize,
    /// A region instead of a monitor: top,left,width,height (mss's order).
    #[arg(short = 'c', long, value_name = "TOP,LEFT,WIDTH,HEIGHT")]
    coordinates: Option<String>,
    /// Frames per second of the video (and of the capture).
    #[arg(
        short = 'r',
        long,
        default_value_t = 30.0,
        allow_negative_numbers = true
    )]
    fps: f64,
    /// Seconds to record; without it, record until Ctrl-C.
    #[arg(short = 't', long, allow_negative_numbers = true)]
    duration: Option<f64>,
    /// FFmpeg video codec.
    #[arg(long, default_value = "libx264")]
    codec: String,
    /// Codec preset (libx264: ultrafast … veryslow).
    #[arg(long, default_value = "ultrafast")]
    preset: String,
    /// Constant rate factor (quality; lower is better).
    #[arg(long)]
    crf: Option<u32>,
    /// Include the mouse cursor.
    #[arg(long)]
    with_cursor: bool,
    /// Capture backend: auto, x11, xshm, xgetimage, wayland, ext-image-copy, wlr-screencopy or portal.
    #[arg(short = 'b', long, default_value = "auto")]
    backend: String,
    /// Display: an X display (":1") or a Wayland socket ("wayland-1", a path); default $WAYLAND_DISPLAY, else $DISPLAY.
    #[arg(short = 'd', long)]
    display: Option<String>,
    /// No progress line, only the summary.
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// Run the subcommand until its duration is up or `stop` is set (Ctrl-C);
/// the error message is printed by `crate::run`.
pub fn run(args: RecordArgs, stop: &crate::Stop) -> Result<(), String> {
    if !(args.fps.is_finite() && args.fps > 0.0 && args.fps <= 1000.0) {
        return Err(format!("--fps {}: must be in (0, 1000]", args.fps));
    }
    if let Some(d) = args.duration {
        if !(d.is_finite() && d > 0.0) {
            return Err(format!(
                "--duration {d}: must be a positive number of seconds"
            ));
        }
    }
    let choice: BackendChoice = args.backend.parse().map_err(|e| format!("{e}"))?;
    // Slots: the capture ring, the frame being written and those queued in the writer.
    let pool = FramePool::new(PoolConfig {
        max_slots: Some(16),
        ..PoolConfig::default()
    });
    let mut grabber =
        Grabber::open(args.display.as_deref(), choice, pool).map_err(|e| e.to_string())?;
    let region = match &args.coordinates {
        Some(c) => crate::grab::parse_coordinates(c)?,
        None => grabber
            .monitor_region(args.monitor)
            .map_err(|e| e.to_string())?,
    };
    // yuv420p needs even sizes: drop a trailing odd row/column rather than fail.
    let region = Region::new(
        region.left,
        region.top,
        region.width & !1,
        region.height & !1,
    );
    if region.width == 0 || region.height == 0 {
        return Err(format!("region {region} is too small to encode"));
    }
    let capture = Capture::start(
        grabber,
        CaptureConfig {
            region: Some(region),
            target_fps: Some(args.fps),
            buffer: 2,
            cursor: args.with_cursor,
        },
    )
    .map_err(|e| e.to_string())?;
    let first = capture
        .latest(Some(Duration::from_secs(5)), false)
        .map_err(|e| format!("first frame: {e}"))?;
    let mut config = VideoConfig::new(
        &args.output,
        first.width(),
        first.height(),
        args.fps,
        first.format(),
    );
    config.codec = args.codec.clone();
    config.preset = Some(args.preset.clone());
    config.crf = args.crf;
    let mut writer = VideoWriter::open(config).map_err(|e| e.to_string())?;

    let total = args
        .duration
        .map(|d| (d * args.fps).round().max(1.0) as u64);
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else if let Some(n) = total {
        ProgressBar::new(n)
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );

    let tick = Duration::from_secs_f64(1.0 / args.fps);
    let start = Instant::now();
    let mut frame = first;
    let mut written: u64 = 0;
    let mut repeats: u64 = 0;
    let result = loop {
        if stop.is_set() || total.is_some_and(|n| written >= n) {
            break Ok(());
        }
        let due = start + tick.mul_f64(written as f64);
        let now = Instant::now();
        if due > now && stop.sleep(due - now) {
            break Ok(());
        }
        match capture.latest(Some(Duration::ZERO), false) {
            Ok(f) => frame = f,
            Err(_) if capture.is_running() => repeats += 1, // no new frame: repeat the last
            Err(e) => {
                break Err(format!(
                    "capture stopped: {}",
                    capture.error().unwrap_or(e.to_string())
                ))
            }
        }
        if let Err(e) = writer.write(&frame) {
            break Err(e.to_string());
        }
        written += 1;
        if written.is_multiple_of(5) || total == Some(written) {
            let elapsed = start.elapsed().as_secs_f64();
            let s = capture.stats();
            bar.set_position(written);
            bar.set_message(format!(
                "{written} frames  {:.1} fps  dropped {}  repeated {repeats}  {}",
                written as f64 / elapsed.max(1e-9),
                s.dropped,
                crate::human_bytes(writer.output_bytes())
            ));
            bar.tick();
        }
    };
    capture.stop();
    let stats = capture.stats();
    let elapsed = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let closed = writer.close().map_err(|e| e.to_string());
    result?;
    closed?;
    println!(
        "{}: {}x{} {} frames at {} fps in {:.2} s ({:.1} fps achieved), captured {}, dropped {}, repeated {}, {}",
        args.output.display(),
        region.width,
        region.height,
        written,
        args.fps,
        elapsed,
        written as f64 / elapsed.max(1e-9),
        stats.captured,
        stats.dropped,
        repeats,
        crate::human_bytes(writer.output_bytes())
    );
    Ok(())
}
