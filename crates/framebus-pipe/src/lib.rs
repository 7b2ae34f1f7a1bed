//! # framebus-pipe
//!
//! Frames into pipes, off the caller's thread, without copying them first:
//!
//! * [`PipeWriter`] — one background thread per fd writes queued jobs in order.
//!   A job owns what keeps its bytes alive (a [`Source`]: a core `Frame` holds a
//!   `Lease`; the Python bindings hold a buffer export), never a bare pointer.
//!   Bounded queues, `sync` per job / key / fd / everything, errors stored and
//!   reported on the next call for the fd, nothing written after a failure.
//! * [`VideoWriter`] — an FFmpeg subprocess fed through a `PipeWriter`, with its
//!   arguments built from the frame format and its stderr drained and kept.
//!
//! Every blocking call has a `*_timeout` twin returning [`WaitError::Timeout`]
//! (with the job's owner handed back) so callers can wait in slices; every
//! count a caller passes is bounded (`MAX_*`/`MIN_*` constants) and refused
//! with [`PipeError::InvalidArgument`] outside its range.
//!
//! Depends on `framebus-core` only. Design notes and figures: `docs/pipe.md`.

mod error;
mod sys;
#[cfg(test)]
mod test_util;
mod video;
mod wait;
mod writer;

pub use error::{PipeError, Result, WaitError, WriteFailure};
pub use sys::{grow_pipe, pipe_max_size};
pub use video::{
    find_ffmpeg, Output, VideoConfig, VideoStatus, VideoWriter, MAX_CRF, MAX_FPS, MAX_VIDEO_SIZE,
    MIN_FPS, STDERR_TAIL,
};
pub use writer::{
    FdStats, LeaseSlice, PipeWriter, Region, Rejected, Source, Ticket, WriterConfig, MAX_CHUNK,
    MAX_DEPTH, MAX_PIPE_SIZE, MIN_CHUNK, MIN_PIPE_SIZE,
};
