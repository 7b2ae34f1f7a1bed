//! Where `framebus view` takes frames from, and how a frame becomes a JPEG.
//!
//! Both sources hand over only the newest frame and never hold the producer
//! back: a channel is read by a latest-mode subscriber (a frame that arrives
//! while the previous one is being encoded replaces it in the mailbox; the
//! publisher never waits for us), the screen by a framebus `Capture` whose
//! `latest()` skips what we had no time for.

use framebus_capture::{BackendChoice, Capture, CaptureConfig, Grabber};
use framebus_channel::{ChannelError, Subscriber};
use framebus_core::{Frame, FramePool, PixelFormat, PoolConfig};
use framebus_kernels::{ImageMut, ImageRef, Method, Options};
use std::time::Duration;

/// A parsed `SOURCE` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    Channel(String),
    Screen(usize),
}

impl SourceSpec {
    pub fn parse(s: &str) -> Result<SourceSpec, String> {
        let usage = "expected channel:NAME or screen:MONITOR (0 = all monitors, 1 = the first)";
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("source {s:?}: {usage}"))?;
        match kind {
            "channel" => {
                framebus_channel::wire::validate_name(rest)
                    .map_err(|e| format!("source {s:?}: {e}"))?;
                Ok(SourceSpec::Channel(rest.to_owned()))
            }
            "screen" => rest
                .parse::<usize>()
                .map(SourceSpec::Screen)
                .map_err(|_| format!("source {s:?}: monitor {rest:?} is not a number; {usage}")),
            other => Err(format!("source {s:?}: unknown kind {other:?}; {usage}")),
        }
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::Channel(n) => write!(f, "channel:{n}"),
            SourceSpec::Screen(m) => write!(f, "screen:{m}"),
        }
    }
}

/// An open source.
pub enum Source {
    /// `None` while waiting for a publisher (after the last one went away).
    Channel {
        name: String,
        sub: Option<Subscriber>,
        /// Frames skipped by earlier subscribers of this run.
        skipped_before: u64,
    },
    Screen(Capture),
}

/// What one `next` call found.
pub enum Next {
    Frame(Frame),
    /// Nothing new within the slice.
    Idle,
    /// The channel's publisher is gone; waiting for a new one.
    NoPublisher,
}

impl Source {
    /// Open `spec`: a channel waits up to `wait` for its publisher, the
    /// screen is captured at `fps`.
    pub fn open(
        spec: &SourceSpec,
        wait: Duration,
        fps: f64,
        display: Option<&str>,
        cursor: bool,
        stop: &crate::Stop,
    ) -> Result<Source, String> {
        match spec {
            SourceSpec::Channel(name) => {
                let start = std::time::Instant::now();
                // In slices, so Ctrl-C ends a long wait.
                loop {
                    let left = wait.saturating_sub(start.elapsed());
                    match Subscriber::connect(name, left.min(Duration::from_millis(100))) {
                        Ok(sub) => {
                            return Ok(Source::Channel {
                                name: name.clone(),
                                sub: Some(sub),
                                skipped_before: 0,
                            })
                        }
                        Err(ChannelError::NotFound { .. }) if !left.is_zero() && !stop.is_set() => {
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
            SourceSpec::Screen(monitor) => {
                if !(fps.is_finite() && fps > 0.0 && fps <= 240.0) {
                    return Err(format!("--fps {fps}: must be in (0, 240]"));
                }
                let pool = FramePool::new(PoolConfig {
                    max_slots: Some(8),
                    ..PoolConfig::default()
                });
                let mut grabber =
                    Grabber::open(display, BackendChoice::Auto, pool).map_err(|e| e.to_string())?;
                let region = grabber
                    .monitor_region(*monitor)
                    .map_err(|e| e.to_string())?;
                Capture::start(
                    grabber,
                    CaptureConfig {
                        region: Some(region),
                        target_fps: Some(fps),
                        buffer: 1,
                        cursor,
                    },
                )
                .map(Source::Screen)
                .map_err(|e| e.to_string())
            }
        }
    }

    /// The newest frame, waiting at most `slice`.
    pub fn next(&mut self, slice: Duration) -> Result<Next, String> {
        match self {
            Source::Channel {
                name,
                sub,
                skipped_before,
            } => {
                let Some(s) = sub else {
                    match Subscriber::connect(name, slice) {
                        Ok(s) => *sub = Some(s),
                        Err(ChannelError::NotFound { .. }) => return Ok(Next::NoPublisher),
                        Err(e) => return Err(e.to_string()),
                    }
                    return Ok(Next::Idle);
                };
                match s.recv(Some(slice)) {
                    Ok(f) => Ok(Next::Frame(f)),
                    Err(ChannelError::Timeout(..)) => Ok(Next::Idle),
                    Err(ChannelError::Closed(_)) => {
                        *skipped_before += s.skipped();
                        *sub = None;
                        Ok(Next::NoPublisher)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Source::Screen(cap) => match cap.latest(Some(slice), false) {
                Ok(f) => Ok(Next::Frame(f)),
                Err(_) if cap.is_running() => Ok(Next::Idle),
                Err(e) => Err(format!(
                    "capture stopped: {}",
                    cap.error().unwrap_or(e.to_string())
                )),
            },
        }
    }

    /// Frames the producer made that this viewer never received.
    pub fn drops(&self) -> u64 {
        match self {
            Source::Channel {
                sub,
                skipped_before,
                ..
            } => skipped_before + sub.as_ref().map_or(0, |s| s.skipped()),
            Source::Screen(cap) => cap.stats().dropped,
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Source::Screen(cap) = self {
            cap.stop();
        }
    }
}

/// JPEG encoding with reusable scratch buffers.
pub struct Encoder {
    pub quality: u8,
    /// Frames wider than this are scaled down (aspect kept) before encoding.
    pub max_width: usize,
    rgb: Vec<u8>,
    small: Vec<u8>,
}

impl Encoder {
    pub fn new(quality: u8, max_width: usize) -> Encoder {
        Encoder {
            quality,
            max_width,
            rgb: Vec::new(),
            small: Vec::new(),
        }
    }

    /// Encode `frame` (any framebus format and stride) into `out`; returns the
    /// encoded width and height. 8-bit packed frames without row padding go to
    /// the encoder as they are; others are converted to RGB by the framebus
    /// kernels first; frames wider than `max_width` are scaled down.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(usize, usize), String> {
        let l = *frame.layout();
        // SAFETY: the slot is not written while we read it: a channel frame is
        // mapped read-only and its publisher does not write a frame after
        // sending it (the channel's contract); a captured frame's slot is not
        // reused while this frame's lease lives.
        let data = unsafe { frame.data() };
        // YUV 4:2:0 is an output format of the kernels: show its luma plane
        // (the first `height` rows), in grey. A known gap (docs/cli.md).
        let (l, data) = match l.format {
            PixelFormat::Nv12 | PixelFormat::I420 => (
                framebus_core::FrameLayout::new(
                    l.width,
                    l.height,
                    PixelFormat::Gray8,
                    Some(l.stride),
                )
                .map_err(|e| e.to_string())?,
                &data[..l.stride * l.height],
            ),
            _ => (l, data),
        };
        let direct = match l.format {
            PixelFormat::Rgb => Some(jpeg_encoder::ColorType::Rgb),
            PixelFormat::Rgba => Some(jpeg_encoder::ColorType::Rgba),
            PixelFormat::Bgr => Some(jpeg_encoder::ColorType::Bgr),
            PixelFormat::Bgra | PixelFormat::Bgrx => Some(jpeg_encoder::ColorType::Bgra),
            PixelFormat::Gray8 => Some(jpeg_encoder::ColorType::Luma),
            _ => None,
        };
        let err = |e: framebus_kernels::KernelError| {
            format!(
                "converting a {}x{} {} frame: {e}",
                l.width, l.height, l.format
            )
        };
        let opts = Options::default();
        let src = ImageRef::new(data, l).map_err(err)?;
        let (w, h) = (l.width, l.height);
        let (tw, th) = if w > self.max_width {
            let th = ((h * self.max_width) as f64 / w as f64).round().max(1.0) as usize;
            (self.max_width, th)
        } else {
            (w, h)
        };
        if tw > usize::from(u16::MAX) || th > usize::from(u16::MAX) {
            return Err(format!(
                "a {tw}x{th} image is too large for JPEG (65535 at most)"
            ));
        }
        let (pixels, color): (&[u8], _) = if (tw, th) != (w, h) {
            // Resize reads 8-bit packed images: convert others to RGB first.
            let packed = if direct.is_some() {
                src
            } else {
                self.rgb.resize(w * h * 3, 0);
                let mut dst = ImageMut::from_parts(&mut self.rgb, w, h, PixelFormat::Rgb, None)
                    .map_err(err)?;
                framebus_kernels::convert(&src, &mut dst, &opts).map_err(err)?;
                ImageRef::from_parts(&self.rgb, w, h, PixelFormat::Rgb, None).map_err(err)?
            };
            self.small.resize(tw * th * 3, 0);
            let mut dst = ImageMut::from_parts(&mut self.small, tw, th, PixelFormat::Rgb, None)
                .map_err(err)?;
            framebus_kernels::resize(&packed, &mut dst, Method::Area, &opts).map_err(err)?;
            (&self.small, jpeg_encoder::ColorType::Rgb)
        } else if let (Some(c), true) = (direct, l.stride == l.row_bytes()) {
            (&data[..l.row_bytes() * h], c)
        } else {
            self.rgb.resize(w * h * 3, 0);
            let mut dst =
                ImageMut::from_parts(&mut self.rgb, w, h, PixelFormat::Rgb, None).map_err(err)?;
            framebus_kernels::convert(&src, &mut dst, &opts).map_err(err)?;
            (&self.rgb, jpeg_encoder::ColorType::Rgb)
        };
        out.clear();
        jpeg_encoder::Encoder::new(&mut *out, self.quality)
            .encode(pixels, tw as u16, th as u16, color)
            .map_err(|e| format!("JPEG encoding: {e}"))?;
        Ok((tw, th))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_bad_ones_are_named() {
        assert_eq!(
            SourceSpec::parse("channel:cam0").unwrap(),
            SourceSpec::Channel("cam0".into())
        );
        assert_eq!(
            SourceSpec::parse("screen:1").unwrap(),
            SourceSpec::Screen(1)
        );
        for (bad, why) in [
            ("cam0", "expected channel:NAME"),
            ("zenoh:key", "unknown kind \"zenoh\""),
            ("screen:x", "not a number"),
            ("channel:a/b", "only letters"),
        ] {
            let e = SourceSpec::parse(bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    fn frame(w: usize, h: usize, format: PixelFormat) -> Frame {
        let pool = FramePool::default();
        let mut f = pool.acquire_frame(w, h, format, None).unwrap();
        for (i, b) in f.data_mut().unwrap().iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        f
    }

    #[test]
    fn every_format_encodes_and_wide_frames_are_scaled() {
        let mut enc = Encoder::new(80, 1920);
        let mut out = Vec::new();
        for f in PixelFormat::ALL {
            let (w, h) = enc.encode(&frame(64, 32, f), &mut out).unwrap();
            assert_eq!((w, h), (64, 32));
            assert_eq!(&out[..2], &[0xff, 0xd8], "{f}: a JPEG");
        }
        enc.max_width = 32;
        assert_eq!(
            enc.encode(&frame(64, 32, PixelFormat::Nv12), &mut out)
                .unwrap(),
            (32, 16)
        );
        assert_eq!(
            enc.encode(&frame(64, 32, PixelFormat::Bgra), &mut out)
                .unwrap(),
            (32, 16)
        );
    }

    /// `cargo test --release -p framebus-cli -- --ignored --nocapture encode_1080p`
    /// (the figures in docs/cli.md): noise is the worst case, a desktop-like
    /// picture (flat areas, gradients, thin lines) the usual one.
    #[test]
    #[ignore]
    fn encode_1080p_time() {
        let mut enc = Encoder::new(80, 1920);
        let mut out = Vec::new();
        let noise = frame(1920, 1080, PixelFormat::Bgra);
        let mut desk = FramePool::default()
            .acquire_frame(1920, 1080, PixelFormat::Bgra, None)
            .unwrap();
        for (i, px) in desk.data_mut().unwrap().chunks_mut(4).enumerate() {
            let (x, y) = (i % 1920, i / 1920);
            let v = if y % 40 == 0 || x % 300 == 0 {
                20
            } else if y < 60 {
                (x / 8) as u8
            } else {
                230
            };
            px.copy_from_slice(&[v, v, (x / 8) as u8, 255]);
        }
        for (what, f) in [("noise", &noise), ("desktop-like", &desk)] {
            enc.encode(f, &mut out).unwrap();
            let n = 20;
            let t = std::time::Instant::now();
            for _ in 0..n {
                enc.encode(f, &mut out).unwrap();
            }
            println!(
                "1080p BGRA {what} -> JPEG q80: {:.1} ms, {} bytes",
                t.elapsed().as_secs_f64() * 1e3 / n as f64,
                out.len()
            );
        }
    }
}
