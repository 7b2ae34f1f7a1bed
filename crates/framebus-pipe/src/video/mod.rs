//! `VideoWriter`: frames → an FFmpeg subprocess → a video file (or a URL).
//!
//! Finds `ffmpeg` (an explicit path, else `$PATH`), builds the rawvideo input
//! arguments from the frame format ([`framebus_core::PixelFormat::ffmpeg_name`]) and a sane
//! output pixel format ([`VideoConfig`], in `config`), starts it with
//! `std::process::Command`, drains its stderr on a thread (`ffmpeg`), and
//! feeds its stdin through a [`PipeWriter`] (zero-copy: a job holds the
//! frame's lease). `close()` flushes, closes stdin, waits, and fails with the
//! tail of FFmpeg's stderr if it failed.
//!
//! Every blocking call (`write_owner`, `flush`, `close`) has a `*_timeout` twin
//! that returns [`WaitError::Timeout`] — handing the frame back — and can be
//! called again to continue exactly where it stopped. [`VideoWriter::status`]
//! is a shared handle of atomics (frames written, pid, closed, failed) that
//! other threads read without any lock a blocked call holds.
//!
//! Generic over the job owner so the Python bindings can feed NumPy arrays
//! (buffer exports) through the same code; Rust callers use `VideoWriter<Frame>`.

mod config;
mod ffmpeg;
#[cfg(test)]
mod tests;

pub use config::{Output, VideoConfig, MAX_CRF, MAX_FPS, MAX_VIDEO_SIZE, MIN_FPS};
pub use ffmpeg::{find_ffmpeg, STDERR_TAIL};

use crate::error::{PipeError, Result, WaitError, WriteFailure};
use crate::wait::{deadline, untimed, untimed_err};
use crate::writer::{PipeWriter, Rejected, Source, WriterConfig};
use ffmpeg::{wait_child, StderrTail};
use framebus_core::{Frame, FrameLayout};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A VideoWriter's state, readable from any thread without waiting: the
/// counters are atomics, updated by the writer's own calls. Get it with
/// [`VideoWriter::status`]; it stays valid (frozen) after the writer is gone.
#[derive(Debug, Default)]
pub struct VideoStatus {
    frames_written: AtomicU64,
    pid: AtomicU32,
    closed: AtomicBool,
    failed: AtomicBool,
}

impl VideoStatus {
    /// Frames queued so far (accepted by `write`).
    pub fn frames_written(&self) -> u64 {
        self.frames_written.load(Ordering::Relaxed)
    }

    /// FFmpeg's process id until it has been reaped (by `close`, or after a
    /// failed write).
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::Relaxed)).filter(|p| *p != 0)
    }

    /// `close` (or `close_timeout`, or `abort`) has begun: writes are refused.
    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// A call of the writer reported a failure of FFmpeg or of the pipe to it.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
}

/// An FFmpeg encode fed through a background pipe writer.
pub struct VideoWriter<O: Source = Frame> {
    config: VideoConfig,
    layout: FrameLayout,
    program: PathBuf,
    child: Option<Child>,
    /// FFmpeg's exit status once reaped.
    exit: Option<ExitStatus>,
    stdin: Option<ChildStdin>,
    fd: i32,
    writer: PipeWriter<O>,
    stderr: StderrTail,
    status: Arc<VideoStatus>,
    /// `close`: the queue is flushed and stdin closed (the first phase is done).
    flushed: bool,
    /// `close`: the write failure the flush reported, kept across timeouts.
    close_write: Option<WriteFailure>,
    result: Option<std::result::Result<(), String>>,
}

impl<O: Source> VideoWriter<O> {
    /// Start FFmpeg for `config` (checked first: see [`VideoConfig::validate`]).
    pub fn open(config: VideoConfig) -> Result<Self> {
        config.validate()?;
        let layout = config.layout()?;
        let program = find_ffmpeg(config.ffmpeg.as_deref())?;
        let mut child = Command::new(&program)
            .args(config.command_args())
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
        let status = Arc::new(VideoStatus::default());
        status.pid.store(child.id(), Ordering::Relaxed);
        Ok(VideoWriter {
            config,
            layout,
            program,
            child: Some(child),
            exit: None,
            stdin: Some(stdin),
            fd,
            writer,
            stderr,
            status,
            flushed: false,
            close_write: None,
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

    /// A shared handle on the writer's state, for other threads: reading it
    /// never waits, even while a call of this writer is blocked.
    pub fn status(&self) -> Arc<VideoStatus> {
        self.status.clone()
    }

    /// Frames queued so far.
    pub fn frames_written(&self) -> u64 {
        self.status.frames_written()
    }

    /// Frames queued but not yet handed to FFmpeg (for progress lines).
    pub fn frames_queued(&self) -> usize {
        self.writer
            .fd_stats(self.fd)
            .map_or(0, |s| (s.submitted - s.done) as usize)
    }

    /// Bytes of the output file so far (0 if it does not exist yet, or for a URL).
    pub fn output_bytes(&self) -> u64 {
        self.config
            .path()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    /// FFmpeg's process id until it has been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.status.pid()
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
        self.write_until(owner, None).map_err(|r| Rejected {
            error: untimed_err(r.error),
            owner: r.owner,
        })
    }

    /// [`VideoWriter::write_owner`] waiting at most `timeout` for room in the
    /// queue (and, after a failed write, for FFmpeg's exit). On
    /// [`WaitError::Timeout`] nothing was queued and the owner is handed back:
    /// writing it again continues as if one long wait had happened.
    pub fn write_owner_timeout(
        &mut self,
        owner: O,
        timeout: Duration,
    ) -> std::result::Result<(), Rejected<O, WaitError>> {
        self.write_until(owner, deadline(timeout))
    }

    fn write_until(
        &mut self,
        owner: O,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), Rejected<O, WaitError>> {
        if self.status.closed() {
            return Err(Rejected {
                error: PipeError::WriterClosed.into(),
                owner,
            });
        }
        if let Err(e) = self.check_region(&owner) {
            return Err(Rejected {
                error: e.into(),
                owner,
            });
        }
        let splice = self.writer.config().splice;
        match self
            .writer
            .submit_until(self.fd, owner, 0, splice, deadline)
        {
            Ok(_) => {
                self.status.frames_written.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(Rejected {
                error: WaitError::Failed(e),
                owner,
            }) => {
                let error = self.ffmpeg_error(e, deadline);
                Err(Rejected { error, owner })
            }
            Err(timeout) => Err(timeout),
        }
    }

    /// Wait until every queued frame reached FFmpeg.
    pub fn flush(&mut self) -> Result<()> {
        untimed(self.flush_until(None))
    }

    /// [`VideoWriter::flush`] waiting at most `timeout`.
    pub fn flush_timeout(&mut self, timeout: Duration) -> Result<(), WaitError> {
        self.flush_until(deadline(timeout))
    }

    fn flush_until(&mut self, deadline: Option<Instant>) -> Result<(), WaitError> {
        if self.status.closed() {
            return Ok(());
        }
        match self.writer.sync_fd_until(self.fd, deadline) {
            Err(WaitError::Failed(e)) => Err(self.ffmpeg_error(e, deadline)),
            r => r,
        }
    }

    /// A write failure usually means FFmpeg died: wait (until `deadline`) for
    /// it and report its stderr. Other errors pass through.
    fn ffmpeg_error(&mut self, e: PipeError, deadline: Option<Instant>) -> WaitError {
        let PipeError::Write(w) = e else {
            return e.into();
        };
        let status = match self.reap(deadline) {
            Ok(Some(s)) => s.to_string(),
            Ok(None) => "already reaped".into(),
            Err(WaitError::Timeout) => return WaitError::Timeout,
            Err(WaitError::Failed(e)) => e.to_string(),
        };
        let stderr_tail = match self.stderr.finish(deadline) {
            Ok(t) => t,
            Err(e) => return e,
        };
        self.status.failed.store(true, Ordering::Relaxed);
        PipeError::Ffmpeg {
            status,
            write: Some(w),
            stderr_tail,
        }
        .into()
    }

    /// Wait for FFmpeg's exit until `deadline` and reap it (once; later calls
    /// return the same status). `Ok(None)` if there is no child.
    fn reap(&mut self, deadline: Option<Instant>) -> Result<Option<ExitStatus>, WaitError> {
        if let Some(s) = self.exit {
            return Ok(Some(s));
        }
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        match wait_child(child, deadline) {
            Ok(Some(s)) => {
                self.exit = Some(s);
                self.status.pid.store(0, Ordering::Relaxed);
                Ok(Some(s))
            }
            Ok(None) => Err(WaitError::Timeout),
            Err(source) => Err(PipeError::Os {
                op: "waiting for ffmpeg",
                source,
            }
            .into()),
        }
    }

    /// Flush, close FFmpeg's stdin, wait for it; an error carries its stderr tail.
    /// Calling it again returns the first outcome.
    pub fn close(&mut self) -> Result<()> {
        untimed(self.close_until(None))
    }

    /// [`VideoWriter::close`] waiting at most `timeout` in all. On
    /// [`WaitError::Timeout`] the writer is closing (writes are refused) and the
    /// next `close`/`close_timeout` continues where this one stopped: draining
    /// the queue into FFmpeg, then waiting for FFmpeg to finish the file.
    pub fn close_timeout(&mut self, timeout: Duration) -> Result<(), WaitError> {
        self.close_until(deadline(timeout))
    }

    fn close_until(&mut self, deadline: Option<Instant>) -> Result<(), WaitError> {
        if let Some(r) = &self.result {
            return r.clone().map_err(|stderr_tail| {
                PipeError::Ffmpeg {
                    status: "reported before".into(),
                    write: None,
                    stderr_tail,
                }
                .into()
            });
        }
        self.status.closed.store(true, Ordering::Relaxed);
        if !self.flushed {
            match self.writer.close_until(self.fd, deadline) {
                Err(WaitError::Timeout) => return Err(WaitError::Timeout),
                Err(WaitError::Failed(PipeError::Write(w))) => self.close_write = Some(w),
                _ => {}
            }
            self.flushed = true;
            drop(self.stdin.take()); // EOF for FFmpeg; the writer no longer uses the fd
        }
        let status = match self.reap(deadline) {
            Err(WaitError::Timeout) => return Err(WaitError::Timeout),
            r => r,
        };
        let tail = self.stderr.finish(deadline)?;
        let write = self.close_write.take();
        let outcome = match status {
            Ok(Some(s)) if s.success() && write.is_none() => Ok(()),
            Ok(Some(s)) => Err(PipeError::Ffmpeg {
                status: s.to_string(),
                write,
                stderr_tail: tail.clone(),
            }),
            Err(WaitError::Failed(e)) => Err(e),
            Err(WaitError::Timeout) | Ok(None) => Ok(()),
        };
        self.child = None;
        self.status.pid.store(0, Ordering::Relaxed);
        if outcome.is_err() {
            self.status.failed.store(true, Ordering::Relaxed);
        }
        self.result = Some(match &outcome {
            Ok(()) => Ok(()),
            Err(_) => Err(tail),
        });
        outcome.map_err(WaitError::from)
    }

    /// Send FFmpeg SIGKILL (the output is left incomplete); `close` then
    /// returns at once with the failure. A no-op once FFmpeg was reaped.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            if let Some(c) = self.child.as_mut() {
                let _ = c.kill();
            }
        }
    }

    /// Kill FFmpeg at once and close (the output is left incomplete).
    pub fn abort(&mut self) {
        self.kill();
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
