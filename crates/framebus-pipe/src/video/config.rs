//! What to record and how: [`VideoConfig`], its bounds, the output (a file or
//! an explicit URL), and the FFmpeg argument list built from it.
//!
//! A file path always reaches FFmpeg as a file: it is passed with FFmpeg's
//! `file:` protocol prefix, so `-out.mp4` is not read as an option and
//! `file:x.mp4` / `http:x` are not read as protocols (FFmpeg still picks the
//! muxer from the extension). Streaming goes through [`Output::Url`], which is
//! passed verbatim.

use crate::error::{PipeError, Result};
use crate::writer::check_depth;
use framebus_core::{FrameLayout, PixelFormat};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// Lowest accepted frame rate (frames per second).
pub const MIN_FPS: f64 = 0.01;
/// Highest accepted frame rate (frames per second).
pub const MAX_FPS: f64 = 1000.0;
/// Highest accepted `crf` (0..=63 covers libx264/5 at any bit depth, VP9, AV1).
pub const MAX_CRF: u32 = 63;
/// Largest accepted width and height (pixels); both must be at least 1.
pub const MAX_VIDEO_SIZE: usize = 32768;

/// Codecs that only take YUV input; fed yuv420p unless the caller says otherwise.
const YUV420_CODECS: &[&str] = &[
    "libx264",
    "h264",
    "libx265",
    "hevc",
    "libvpx",
    "libvpx-vp9",
    "libaom-av1",
    "libsvtav1",
    "librav1e",
    "mpeg4",
    "mpeg2video",
    "h264_nvenc",
    "hevc_nvenc",
    "h264_vaapi",
    "hevc_vaapi",
    "h264_qsv",
    "hevc_qsv",
];

/// Where the video goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A file, always written as exactly that path (passed as `file:<path>`).
    File(PathBuf),
    /// A URL handed to FFmpeg verbatim (`rtmp://…`, `udp://…`, `pipe:1`, …);
    /// must start with a protocol name and `:`. Add `-f <muxer>` to
    /// [`VideoConfig::extra_args`] when the URL has no telling extension.
    Url(String),
}

impl Output {
    /// The last argument of the FFmpeg command line.
    fn ffmpeg_arg(&self) -> OsString {
        match self {
            Output::File(p) => {
                let mut a = OsString::from("file:");
                a.push(p.as_os_str());
                a
            }
            Output::Url(u) => OsString::from(u),
        }
    }

    fn validate(&self) -> Result<()> {
        match self {
            Output::File(p) if p.as_os_str().is_empty() => Err(PipeError::InvalidArgument {
                what: "path",
                value: "\"\"".into(),
                why: "must name a file",
            }),
            Output::File(_) => Ok(()),
            Output::Url(u) => {
                let scheme = u.split_once(':').map_or("", |(s, _)| s);
                let ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
                if ok {
                    Ok(())
                } else {
                    Err(PipeError::InvalidArgument {
                        what: "url",
                        value: format!("{u:?}"),
                        why: "must start with a protocol (e.g. \"rtmp://\", \"udp://\", \"pipe:\"); use a file path for files",
                    })
                }
            }
        }
    }
}

/// What to record and how.
#[derive(Clone, Debug)]
pub struct VideoConfig {
    /// The file or URL to write.
    pub output: Output,
    /// Frame width in pixels: 1..=[`MAX_VIDEO_SIZE`].
    pub width: usize,
    /// Frame height in pixels: 1..=[`MAX_VIDEO_SIZE`].
    pub height: usize,
    /// Frames per second: finite, [`MIN_FPS`]..=[`MAX_FPS`].
    pub fps: f64,
    pub format: PixelFormat,
    pub codec: String,
    pub preset: Option<String>,
    /// Constant rate factor: 0..=[`MAX_CRF`].
    pub crf: Option<u32>,
    /// Output `-pix_fmt`; `None` picks one (see [`VideoConfig::output_pix_fmt`]).
    pub pix_fmt: Option<String>,
    /// Extra output arguments, placed just before the output.
    pub extra_args: Vec<String>,
    /// The ffmpeg executable; `None` searches `$PATH`.
    pub ffmpeg: Option<PathBuf>,
    /// Frames that may be queued before `write` blocks: 1..=[`crate::MAX_DEPTH`].
    pub queue_depth: usize,
    /// Feed FFmpeg with `vmsplice` (no copy into the pipe). Safe here because
    /// FFmpeg reads its stdin with `read(2)`, which copies the bytes out; a frame
    /// is released only once FFmpeg consumed all of it (see docs/pipe.md).
    pub splice: bool,
}

impl VideoConfig {
    /// A config with libx264 defaults for `width`×`height` `format` frames,
    /// written to the file `path`.
    pub fn new(
        path: impl Into<PathBuf>,
        width: usize,
        height: usize,
        fps: f64,
        format: PixelFormat,
    ) -> Self {
        VideoConfig {
            output: Output::File(path.into()),
            width,
            height,
            fps,
            format,
            codec: "libx264".into(),
            preset: None,
            crf: None,
            pix_fmt: None,
            extra_args: Vec::new(),
            ffmpeg: None,
            queue_depth: 8,
            splice: true,
        }
    }

    /// [`VideoConfig::new`] streaming to `url` ([`Output::Url`]) instead of a file.
    pub fn url(
        url: impl Into<String>,
        width: usize,
        height: usize,
        fps: f64,
        format: PixelFormat,
    ) -> Self {
        let mut c = VideoConfig::new(PathBuf::new(), width, height, fps, format);
        c.output = Output::Url(url.into());
        c
    }

    /// The output file, or `None` for a URL.
    pub fn path(&self) -> Option<&Path> {
        match &self.output {
            Output::File(p) => Some(p),
            Output::Url(_) => None,
        }
    }

    /// The output pixel format: the caller's, else yuv420p for the YUV-only
    /// codecs (players expect it; libx264 would otherwise pick 4:4:4), else
    /// none (FFmpeg picks the closest format the codec supports, which keeps
    /// RGB for lossless RGB codecs such as ffv1, libx264rgb, png, utvideo).
    pub fn output_pix_fmt(&self) -> Option<String> {
        if let Some(p) = &self.pix_fmt {
            return Some(p.clone());
        }
        YUV420_CODECS
            .contains(&self.codec.as_str())
            .then(|| "yuv420p".to_string())
    }

    /// The frame layout every written frame must have (tight rows).
    pub fn layout(&self) -> Result<FrameLayout> {
        FrameLayout::new(self.width, self.height, self.format, None).map_err(PipeError::Layout)
    }

    /// Check every field against its documented range.
    pub fn validate(&self) -> Result<()> {
        for (what, v) in [("width", self.width), ("height", self.height)] {
            if !(1..=MAX_VIDEO_SIZE).contains(&v) {
                return Err(PipeError::InvalidArgument {
                    what,
                    value: v.to_string(),
                    why: "must be 1..=32768 pixels",
                });
            }
        }
        self.layout()?;
        if !(self.fps.is_finite() && (MIN_FPS..=MAX_FPS).contains(&self.fps)) {
            return Err(PipeError::InvalidArgument {
                what: "fps",
                value: format!("{:?}", self.fps),
                why: "must be a finite number in 0.01..=1000",
            });
        }
        if let Some(crf) = self.crf.filter(|c| *c > MAX_CRF) {
            return Err(PipeError::InvalidArgument {
                what: "crf",
                value: crf.to_string(),
                why: "must be 0..=63",
            });
        }
        if self.output_pix_fmt().as_deref() == Some("yuv420p")
            && (!self.width.is_multiple_of(2) || !self.height.is_multiple_of(2))
        {
            return Err(PipeError::InvalidArgument {
                what: "video size",
                value: format!("{}x{}", self.width, self.height),
                why: "yuv420p output needs an even width and height (pass pix_fmt=\"yuv444p\" or crop)",
            });
        }
        check_depth("queue_depth", self.queue_depth)?;
        if self.codec.is_empty() || self.codec.starts_with('-') {
            return Err(PipeError::InvalidArgument {
                what: "codec",
                value: format!("{:?}", self.codec),
                why: "must be an FFmpeg encoder name",
            });
        }
        self.output.validate()
    }

    /// The full FFmpeg argument list (without the program), as text for logs
    /// and display; a non-UTF-8 path is shown lossily (the process gets
    /// [`VideoConfig::command_args`]).
    pub fn args(&self) -> Vec<String> {
        self.command_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The full FFmpeg argument list (without the program), exactly as passed.
    pub fn command_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = [
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            self.format.ffmpeg_name(),
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let mut push = |s: &str| a.push(OsStr::new(s).to_os_string());
        push("-video_size");
        push(&format!("{}x{}", self.width, self.height));
        push("-framerate");
        push(&format_fps(self.fps));
        for s in ["-i", "pipe:0", "-an", "-c:v", &self.codec] {
            push(s);
        }
        if let Some(p) = &self.preset {
            push("-preset");
            push(p);
        }
        if let Some(c) = self.crf {
            push("-crf");
            push(&c.to_string());
        }
        if let Some(p) = self.output_pix_fmt() {
            push("-pix_fmt");
            push(&p);
        }
        for e in &self.extra_args {
            push(e);
        }
        a.push(self.output.ffmpeg_arg());
        a
    }
}

fn format_fps(fps: f64) -> String {
    if fps.fract() == 0.0 {
        format!("{}", fps as u64)
    } else {
        format!("{fps}")
    }
}
