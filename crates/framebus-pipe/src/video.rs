//! `VideoWriter`: frames → an FFmpeg subprocess → a video file.
//!
//! Finds `ffmpeg` (an explicit path, else `$PATH`), builds the rawvideo input
//! arguments from the frame format ([`PixelFormat::ffmpeg_name`]) and a sane
//! output pixel format, starts it with `std::process::Command`, drains its
//! stderr on a thread (keeping the last [`STDERR_TAIL`] bytes, so FFmpeg can
//! never block on a full stderr pipe), and feeds its stdin through a
//! [`PipeWriter`] (zero-copy: a job holds the frame's lease). `close()` flushes,
//! closes stdin, waits, and fails with the tail of FFmpeg's stderr if it failed.
//!
//! Generic over the job owner so the Python bindings can feed NumPy arrays
//! (buffer exports) through the same code; Rust callers use `VideoWriter<Frame>`.

use crate::error::{PipeError, Result};
use crate::writer::{PipeWriter, Rejected, Source, WriterConfig};
use framebus_core::{Frame, FrameLayout, PixelFormat};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Bytes of FFmpeg's stderr kept for error messages.
pub const STDERR_TAIL: usize = 16 * 1024;

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

/// What to record and how.
#[derive(Clone, Debug)]
pub struct VideoConfig {
    pub path: PathBuf,
    pub width: usize,
    pub height: usize,
    /// Frames per second (a positive, finite number).
    pub fps: f64,
    pub format: PixelFormat,
    pub codec: String,
    pub preset: Option<String>,
    pub crf: Option<u32>,
    /// Output `-pix_fmt`; `None` picks one (see [`VideoConfig::output_pix_fmt`]).
    pub pix_fmt: Option<String>,
    /// Extra output arguments, placed just before the path.
    pub extra_args: Vec<String>,
    /// The ffmpeg executable; `None` searches `$PATH`.
    pub ffmpeg: Option<PathBuf>,
    /// Frames that may be queued before `write` blocks.
    pub queue_depth: usize,
    /// Feed FFmpeg with `vmsplice` (no copy into the pipe). Safe here because
    /// FFmpeg reads its stdin with `read(2)`, which copies the bytes out; a frame
    /// is released only once FFmpeg consumed all of it (see docs/pipe.md).
    pub splice: bool,
}

impl VideoConfig {
    /// A config with libx264 defaults for `width`×`height` `format` frames.
    pub fn new(
        path: impl Into<PathBuf>,
        width: usize,
        height: usize,
        fps: f64,
        format: PixelFormat,
    ) -> Self {
        VideoConfig {
            path: path.into(),
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

    fn validate(&self) -> Result<()> {
        self.layout()?;
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return Err(PipeError::InvalidArgument {
                what: "fps",
                value: self.fps.to_string(),
                why: "must be a positive, finite number",
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
        if self.queue_depth == 0 {
            return Err(PipeError::InvalidArgument {
                what: "queue depth",
                value: "0".into(),
                why: "must be at least 1",
            });
        }
        if self.codec.is_empty() || self.codec.starts_with('-') {
            return Err(PipeError::InvalidArgument {
                what: "codec",
                value: format!("{:?}", self.codec),
                why: "must be an FFmpeg encoder name",
            });
        }
        Ok(())
    }

    /// The full FFmpeg argument list (without the program).
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
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
        .map(|s| s.to_string())
        .collect();
        a.push("-video_size".into());
        a.push(format!("{}x{}", self.width, self.height));
        a.push("-framerate".into());
        a.push(format_fps(self.fps));
        a.extend(["-i", "pipe:0", "-an", "-c:v"].map(String::from));
        a.push(self.codec.clone());
        if let Some(p) = &self.preset {
            a.push("-preset".into());
            a.push(p.clone());
        }
        if let Some(c) = self.crf {
            a.push("-crf".into());
            a.push(c.to_string());
        }
        if let Some(p) = self.output_pix_fmt() {
            a.push("-pix_fmt".into());
            a.push(p);
        }
        a.extend(self.extra_args.iter().cloned());
        a.push(self.path.to_string_lossy().into_owned());
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

/// Find an executable: `explicit` if given (must exist), else `name` on `$PATH`.
pub fn find_ffmpeg(explicit: Option<&Path>) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exe = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if let Some(p) = explicit {
        if p.components().count() == 1 && !p.exists() {
            // A bare name: look it up on PATH below.
            return find_on_path(&p.to_string_lossy(), &is_exe);
        }
        return if is_exe(p) {
            Ok(p.to_path_buf())
        } else {
            Err(PipeError::FfmpegNotFound(format!(
                "{} is not an executable file",
                p.display()
            )))
        };
    }
    find_on_path("ffmpeg", &is_exe)
}

fn find_on_path(name: &str, is_exe: &dyn Fn(&Path) -> bool) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_exe(p))
        .ok_or_else(|| {
            PipeError::FfmpegNotFound(format!(
                "no {name:?} on PATH ({}); install FFmpeg or pass ffmpeg=\"/path/to/ffmpeg\"",
                path.to_string_lossy()
            ))
        })
}

/// Collects the tail of a child's stderr on a thread.
struct StderrTail {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl StderrTail {
    fn start(mut stderr: std::process::ChildStderr) -> Result<StderrTail> {
        let buf = Arc::new(Mutex::new(Vec::with_capacity(STDERR_TAIL)));
        let sink = buf.clone();
        let thread = std::thread::Builder::new()
            .name("framebus-ffmpeg-stderr".into())
            .spawn(move || {
                let mut chunk = [0u8; 4096];
                loop {
                    match stderr.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            let mut b = sink.lock().unwrap_or_else(|p| p.into_inner());
                            b.extend_from_slice(&chunk[..n]);
                            if b.len() > 2 * STDERR_TAIL {
                                let cut = b.len() - STDERR_TAIL;
                                b.drain(..cut);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            })
            .map_err(|source| PipeError::Os {
                op: "starting the stderr reader thread",
                source,
            })?;
        Ok(StderrTail {
            buf,
            thread: Some(thread),
        })
    }

    /// Wait for EOF (the child exited) and return the tail as text.
    fn finish(&mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.tail()
    }

    fn tail(&self) -> String {
        let b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let start = b.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&b[start..]).trim_end().to_string()
    }
}

/// An FFmpeg encode fed through a background pipe writer.
pub struct VideoWriter<O: Source = Frame> {
    config: VideoConfig,
    layout: FrameLayout,
    program: PathBuf,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    fd: i32,
    writer: PipeWriter<O>,
    stderr: StderrTail,
    frames: u64,
    result: Option<std::result::Result<(), String>>,
}

impl<O: Source> VideoWriter<O> {
    /// Start FFmpeg for `config`.
    pub fn open(config: VideoConfig) -> Result<Self> {
        config.validate()?;
        let layout = config.layout()?;
        let program = find_ffmpeg(config.ffmpeg.as_deref())?;
        let mut child = Command::new(&program)
            .args(config.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| PipeError::FfmpegSpawn {
                program: program.display().to_string(),
                source,
            })?;
        let stdin = child.stdin.take();
        let stderr = child.stderr.take();
        let (Some(stdin), Some(stderr)) = (stdin, stderr) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(PipeError::FfmpegSpawn {
                program: program.display().to_string(),
                source: std::io::Error::other("no stdin/stderr pipe"),
            });
        };
        let stderr = StderrTail::start(stderr)?;
        let writer = PipeWriter::new(WriterConfig {
            depth: config.queue_depth,
            splice: config.splice,
            ..WriterConfig::default()
        })?;
        let fd = stdin.as_raw_fd();
        Ok(VideoWriter {
            config,
            layout,
            program,
            child: Some(child),
            stdin: Some(stdin),
            fd,
            writer,
            stderr,
            frames: 0,
            result: None,
        })
    }

    pub fn config(&self) -> &VideoConfig {
        &self.config
    }

    /// The layout every frame must have.
    pub fn layout(&self) -> &FrameLayout {
        &self.layout
    }

    /// The ffmpeg executable in use.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The full command line, for logs.
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.config.args())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Frames queued so far.
    pub fn frames_written(&self) -> u64 {
        self.frames
    }

    /// Frames queued but not yet handed to FFmpeg (for progress lines).
    pub fn frames_queued(&self) -> usize {
        self.writer
            .fd_stats(self.fd)
            .map_or(0, |s| (s.submitted - s.done) as usize)
    }

    /// Bytes of the output file so far (0 if it does not exist yet).
    pub fn output_bytes(&self) -> u64 {
        std::fs::metadata(&self.config.path).map_or(0, |m| m.len())
    }

    /// FFmpeg's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Check a frame's geometry against the writer's: format, size, and (for
    /// planar YUV, which is written as one block) a tight stride.
    pub fn check_layout(&self, l: &FrameLayout) -> Result<()> {
        if l.format != self.layout.format {
            return Err(PipeError::FrameMismatch {
                what: "format",
                expected: self.layout.format.to_string(),
                got: l.format.to_string(),
            });
        }
        if (l.width, l.height) != (self.layout.width, self.layout.height) {
            return Err(PipeError::FrameMismatch {
                what: "size",
                expected: format!("{}x{}", self.layout.width, self.layout.height),
                got: format!("{}x{}", l.width, l.height),
            });
        }
        if l.format.is_planar() && !l.is_contiguous() {
            return Err(PipeError::FrameMismatch {
                what: "stride",
                expected: format!("{} (planar frames must be tight)", l.row_bytes()),
                got: l.stride.to_string(),
            });
        }
        Ok(())
    }

    /// Check a job's bytes against the expected frame: a contiguous block of
    /// exactly one frame, or `height` rows of exactly one row of pixels each.
    pub fn check_region(&self, owner: &O) -> Result<()> {
        let r = owner.region();
        let l = &self.layout;
        if r.is_contiguous() && r.byte_len_tight() == l.byte_len() {
            return Ok(());
        }
        if r.rows <= 1 {
            return Err(PipeError::FrameMismatch {
                what: "byte size",
                expected: format!(
                    "{} bytes ({}x{} {})",
                    l.byte_len(),
                    l.width,
                    l.height,
                    l.format
                ),
                got: format!("{} bytes", r.byte_len_tight()),
            });
        }
        let (rows, row_bytes) = if l.format.is_planar() {
            (1, l.byte_len())
        } else {
            (l.height, l.row_bytes())
        };
        if r.rows != rows {
            return Err(PipeError::FrameMismatch {
                what: "height",
                expected: format!("{rows} rows"),
                got: format!("{} rows", r.rows),
            });
        }
        if r.row_bytes != row_bytes {
            return Err(PipeError::FrameMismatch {
                what: "row size",
                expected: format!("{row_bytes} bytes ({} px of {})", l.width, l.format),
                got: format!("{} bytes", r.row_bytes),
            });
        }
        Ok(())
    }

    /// Queue one frame's bytes (checked against the layout), zero-copy.
    /// Fails with the pipe error if FFmpeg stopped reading; the owner is handed
    /// back in [`Rejected`].
    pub fn write_owner(&mut self, owner: O) -> std::result::Result<(), Rejected<O>> {
        if self.stdin.is_none() {
            return Err(Rejected {
                error: PipeError::WriterClosed,
                owner,
            });
        }
        if let Err(error) = self.check_region(&owner) {
            return Err(Rejected { error, owner });
        }
        match self.writer.submit(self.fd, owner, 0) {
            Ok(_) => {
                self.frames += 1;
                Ok(())
            }
            Err(Rejected { error, owner }) => {
                let error = self.ffmpeg_error(error);
                Err(Rejected { error, owner })
            }
        }
    }

    /// Wait until every queued frame reached FFmpeg.
    pub fn flush(&mut self) -> Result<()> {
        if self.stdin.is_none() {
            return Ok(());
        }
        self.writer
            .sync_fd(self.fd)
            .map_err(|e| self.ffmpeg_error(e))
    }

    /// A write failure usually means FFmpeg died: wait for it and report its stderr.
    fn ffmpeg_error(&mut self, e: PipeError) -> PipeError {
        let PipeError::Write(w) = e else { return e };
        let status = match self.child.as_mut().map(|c| c.wait()) {
            Some(Ok(s)) => s.to_string(),
            Some(Err(e)) => format!("wait failed: {e}"),
            None => "already reaped".into(),
        };
        PipeError::Ffmpeg {
            status,
            write: Some(w),
            stderr_tail: self.stderr.finish(),
        }
    }

    /// Flush, close FFmpeg's stdin, wait for it; an error carries its stderr tail.
    /// Calling it again returns the first outcome.
    pub fn close(&mut self) -> Result<()> {
        if let Some(r) = &self.result {
            return r.clone().map_err(|stderr_tail| PipeError::Ffmpeg {
                status: "reported before".into(),
                write: None,
                stderr_tail,
            });
        }
        let write = match self.writer.close(self.fd) {
            Err(PipeError::Write(w)) => Some(w),
            _ => None,
        };
        drop(self.stdin.take()); // EOF for FFmpeg; the writer no longer uses the fd
        let status = self.child.take().map(|mut c| c.wait());
        let tail = self.stderr.finish();
        let outcome = match status {
            Some(Ok(s)) if s.success() && write.is_none() => Ok(()),
            Some(Ok(s)) => Err(PipeError::Ffmpeg {
                status: s.to_string(),
                write,
                stderr_tail: tail.clone(),
            }),
            Some(Err(e)) => Err(PipeError::Os {
                op: "waiting for ffmpeg",
                source: e,
            }),
            None => Ok(()),
        };
        self.result = Some(match &outcome {
            Ok(()) => Ok(()),
            Err(_) => Err(tail),
        });
        outcome
    }

    /// Kill FFmpeg at once (the output is left incomplete).
    pub fn abort(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
        let _ = self.close();
    }
}

impl VideoWriter<Frame> {
    /// Queue a core frame (its lease keeps the pixels alive until written).
    pub fn write(&mut self, frame: &Frame) -> Result<()> {
        self.check_layout(frame.layout())?;
        self.write_owner(frame.clone()).map_err(|r| r.error)
    }
}

impl<O: Source> Drop for VideoWriter<O> {
    /// Finish the file as `close()` would (errors are lost: call `close()`).
    fn drop(&mut self) {
        if self.result.is_none() {
            let _ = self.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use framebus_core::FramePool;

    fn have_ffmpeg() -> bool {
        find_ffmpeg(None).is_ok()
    }

    /// A file path in a per-test directory, removed when the guard drops.
    struct TmpDir(PathBuf);
    impl Drop for TmpDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    thread_local!(static DIR: TmpDir = {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("framebus-pipe-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TmpDir(d)
    });

    fn tmp(name: &str) -> PathBuf {
        DIR.with(|d| d.0.join(name))
    }

    fn frame(pool: &FramePool, w: usize, h: usize, k: u8) -> Frame {
        let mut f = pool.acquire_frame(w, h, PixelFormat::Bgra, None).unwrap();
        for (i, b) in f.data_mut().unwrap().iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7).wrapping_add(k.wrapping_mul(13));
        }
        f
    }

    #[test]
    fn lossless_encode_decodes_to_the_same_frames() {
        if !have_ffmpeg() {
            eprintln!("skipped: no ffmpeg");
            return;
        }
        let (w, h) = (64, 48);
        let path = tmp("lossless.mkv");
        let mut cfg = VideoConfig::new(&path, w, h, 25.0, PixelFormat::Bgra);
        cfg.codec = "ffv1".into();
        let mut vw: VideoWriter = VideoWriter::open(cfg).unwrap();
        assert!(vw
            .command_line()
            .contains("-pix_fmt bgra -video_size 64x48 -framerate 25"));
        let pool = FramePool::default();
        let mut expect = Vec::new();
        for k in 0..12 {
            let f = frame(&pool, w, h, k);
            // SAFETY: no writer to this frame (we filled it and only the job reads it).
            expect.extend_from_slice(unsafe { f.data() });
            vw.write(&f).unwrap();
        }
        assert_eq!(vw.frames_written(), 12);
        vw.flush().unwrap();
        assert_eq!(vw.frames_queued(), 0);
        vw.close().unwrap();
        assert!(vw.output_bytes() > 0);
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&path)
            .args(["-f", "rawvideo", "-pix_fmt", "bgra", "-"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), expect.len());
        assert!(out.stdout == expect, "decoded frames differ");
    }

    #[test]
    fn bad_codec_fails_with_stderr_tail() {
        if !have_ffmpeg() {
            return;
        }
        let mut cfg = VideoConfig::new(tmp("bad.mkv"), 32, 32, 30.0, PixelFormat::Bgra);
        cfg.codec = "no_such_codec_x".into();
        let mut vw: VideoWriter = VideoWriter::open(cfg).unwrap();
        let pool = FramePool::default();
        // Writes may or may not fail first (FFmpeg exits quickly); close must fail.
        for k in 0..50 {
            if vw.write(&frame(&pool, 32, 32, k)).is_err() {
                break;
            }
        }
        let e = vw.close().unwrap_err().to_string();
        assert!(e.contains("no_such_codec_x"), "{e}");
        assert!(e.contains("ffmpeg failed"), "{e}");
        assert!(vw.close().is_err(), "close again repeats the failure");
    }

    #[test]
    fn killed_ffmpeg_gives_an_error_not_a_hang() {
        if !have_ffmpeg() {
            return;
        }
        let cfg = VideoConfig::new(tmp("killed.mp4"), 320, 240, 30.0, PixelFormat::Bgra);
        let mut vw: VideoWriter = VideoWriter::open(cfg).unwrap();
        let pool = FramePool::default();
        vw.write(&frame(&pool, 320, 240, 0)).unwrap();
        let pid = vw.pid().unwrap();
        // SAFETY: plain kill(2) of our own child process.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let mut failed = None;
        for k in 0..200 {
            if let Err(e) = vw.write(&frame(&pool, 320, 240, k)) {
                failed = Some(e);
                break;
            }
        }
        let e = failed.unwrap_or_else(|| vw.close().unwrap_err());
        let s = e.to_string();
        assert!(
            s.contains("ffmpeg failed") && s.contains("signal: 9"),
            "{s}"
        );
        assert!(vw.close().is_err());
    }

    #[test]
    fn mismatched_frames_and_bad_configs_are_refused() {
        if !have_ffmpeg() {
            return;
        }
        let mut cfg = VideoConfig::new(tmp("m.mkv"), 32, 32, 30.0, PixelFormat::Bgra);
        cfg.codec = "ffv1".into();
        let mut vw: VideoWriter = VideoWriter::open(cfg).unwrap();
        let pool = FramePool::default();
        let e = vw.write(&frame(&pool, 32, 16, 0)).unwrap_err().to_string();
        assert!(e.contains("expects 32x32, got 32x16"), "{e}");
        let f = pool.acquire_frame(32, 32, PixelFormat::Rgba, None).unwrap();
        let e = vw.write(&f).unwrap_err().to_string();
        assert!(
            e.contains("format mismatch") && e.contains("expects BGRA, got RGBA"),
            "{e}"
        );
        vw.close().unwrap();
        let e = vw.write(&frame(&pool, 32, 32, 0)).unwrap_err();
        assert!(matches!(e, PipeError::WriterClosed), "{e}");

        let odd = VideoConfig::new(tmp("o.mp4"), 33, 32, 30.0, PixelFormat::Bgra);
        let e = VideoWriter::<Frame>::open(odd).err().unwrap().to_string();
        assert!(e.contains("33x32") && e.contains("even"), "{e}");
        let zero_fps = VideoConfig::new(tmp("z.mp4"), 32, 32, 0.0, PixelFormat::Bgra);
        let e = VideoWriter::<Frame>::open(zero_fps)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("invalid fps: 0"), "{e}");
        let mut nf = VideoConfig::new(tmp("n.mp4"), 32, 32, 30.0, PixelFormat::Bgra);
        nf.ffmpeg = Some("/nonexistent/ffmpeg".into());
        let e = VideoWriter::<Frame>::open(nf).err().unwrap().to_string();
        assert!(
            e.contains("/nonexistent/ffmpeg is not an executable"),
            "{e}"
        );
    }

    #[test]
    fn output_pix_fmt_rules() {
        let mut c = VideoConfig::new("x.mp4", 2, 2, 29.97, PixelFormat::Rgb);
        assert_eq!(c.output_pix_fmt().as_deref(), Some("yuv420p"));
        let a = c.args().join(" ");
        assert!(
            a.contains("-pix_fmt rgb24 -video_size 2x2 -framerate 29.97 -i pipe:0"),
            "{a}"
        );
        c.codec = "libx264rgb".into();
        assert_eq!(c.output_pix_fmt(), None);
        c.pix_fmt = Some("bgr0".into());
        c.extra_args = vec!["-qp".into(), "0".into()];
        c.preset = Some("ultrafast".into());
        let a = c.args().join(" ");
        assert!(
            a.ends_with("-c:v libx264rgb -preset ultrafast -pix_fmt bgr0 -qp 0 x.mp4"),
            "{a}"
        );
    }
}
