//! The pipe crate's error types. Write errors keep the OS error (errno) so the
//! Python bindings can raise the matching `OSError` subclass (`BrokenPipeError`
//! for EPIPE, …); VideoWriter errors carry the tail of FFmpeg's stderr.
//! [`WaitError`] is what the `*_timeout` calls return: a timeout, after which
//! the call can simply be repeated, or a [`PipeError`].

use std::io;

/// Result alias for the pipe crate.
pub type Result<T, E = PipeError> = std::result::Result<T, E>;

/// A write to an fd that failed; stored by the worker and reported on the next
/// `submit`/`sync`/`close` for that fd.
#[derive(Debug, Clone)]
pub struct WriteFailure {
    /// The fd that failed.
    pub fd: i32,
    /// The raw OS error number (EPIPE, EBADF, ENOSPC, …).
    pub errno: i32,
    /// Sequence number (0-based, per fd) of the job whose write failed.
    pub job: u64,
    /// Bytes of that job that reached the fd before the failure.
    pub written: usize,
    /// Bytes the job had in all.
    pub len: usize,
}

impl WriteFailure {
    /// The failure as an `io::Error` carrying the errno.
    pub fn io_error(&self) -> io::Error {
        io::Error::from_raw_os_error(self.errno)
    }
}

impl std::fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "write to fd {} failed on job {} after {} of {} bytes: {}; nothing more is written to this fd",
            self.fd,
            self.job,
            self.written,
            self.len,
            self.io_error()
        )
    }
}

/// Errors of the pipe writer and the VideoWriter.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    /// A background write failed (stored, reported on the next call for that fd).
    #[error("{0}")]
    Write(WriteFailure),
    /// A negative fd, or another argument that can never work.
    #[error("invalid {what}: {value} ({why})")]
    InvalidArgument {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    /// `submit` on an fd whose worker is being closed by another thread.
    #[error("fd {0} is being closed; no more jobs are accepted for it")]
    Closing(i32),
    /// The worker thread could not be started.
    #[error("could not start the writer thread for fd {fd}: {source}")]
    Spawn {
        fd: i32,
        #[source]
        source: io::Error,
    },
    /// No ffmpeg executable was found.
    #[error("ffmpeg not found: {0}")]
    FfmpegNotFound(String),
    /// Starting ffmpeg failed.
    #[error("could not start {program}: {source}")]
    FfmpegSpawn {
        program: String,
        #[source]
        source: io::Error,
    },
    /// FFmpeg exited with an error (or was killed), or the pipe to it broke.
    #[error("ffmpeg failed ({status}){write}; last lines of its stderr:\n{stderr_tail}", write = match .write { Some(w) => format!("; {w}"), None => String::new() })]
    Ffmpeg {
        status: String,
        write: Option<WriteFailure>,
        stderr_tail: String,
    },
    /// A frame whose geometry does not match what the VideoWriter was opened with.
    #[error("frame {what} mismatch: the VideoWriter expects {expected}, got {got}")]
    FrameMismatch {
        what: &'static str,
        expected: String,
        got: String,
    },
    /// A video size or format the core refuses (the message names the value).
    #[error("invalid video layout: {0}")]
    Layout(#[source] framebus_core::Error),
    /// The VideoWriter was already closed.
    #[error("the VideoWriter is closed")]
    WriterClosed,
    /// Another system call failed.
    #[error("{op} failed: {source}")]
    Os {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl PipeError {
    /// The errno of a write failure, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            PipeError::Write(w) => Some(w.errno),
            PipeError::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// The outcome of a bounded wait (`submit_timeout`, `sync_*_timeout`,
/// `VideoWriter::write_owner_timeout`, `close_timeout`, …) that did not succeed.
///
/// A separate type rather than a `PipeError` variant, so that code matching
/// `PipeError` exhaustively keeps compiling and no unbounded call can ever
/// return a timeout.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The time ran out first. Nothing was queued, written, dropped or reported
    /// by the call (a stored write error stays stored): calling it again with
    /// the same arguments continues as if it had waited all along.
    #[error("timed out; nothing was lost, call again to keep waiting")]
    Timeout,
    /// The call failed as its unbounded version would have.
    #[error(transparent)]
    Failed(#[from] PipeError),
}

impl WaitError {
    /// True for [`WaitError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, WaitError::Timeout)
    }
}
