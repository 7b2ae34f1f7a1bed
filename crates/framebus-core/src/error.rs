//! The core error type. Every variant carries the value that was wrong so the
//! message alone tells the user what to fix; the Python bindings map each
//! variant to one exception class, once.

use std::time::Duration;

/// Result alias for the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors raised by the pool, slots and frame geometry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A width, height or size that is zero, negative or absurd.
    #[error("invalid {what}: {value} ({why})")]
    InvalidDimension {
        what: &'static str,
        value: i128,
        why: &'static str,
    },
    /// A pixel-format name that framebus does not know.
    #[error("unknown pixel format {0:?}; expected one of {known}", known = crate::PixelFormat::NAMES.join(", "))]
    UnknownFormat(String),
    /// A row stride smaller than one row of pixels, or not a multiple of the sample size.
    #[error("invalid stride {stride} for a {width}-pixel {format} row: {why} (minimum {min})")]
    InvalidStride {
        stride: usize,
        width: usize,
        format: crate::PixelFormat,
        min: usize,
        why: &'static str,
    },
    /// A request that can never fit the pool, however much is released.
    #[error("a {requested}-byte frame is larger than the pool's {limit_name}={limit}")]
    TooLarge {
        requested: usize,
        limit_name: &'static str,
        limit: usize,
    },
    /// Every slot is in use and the pool is at its limit.
    #[error(
        "pool exhausted: {limit_name}={limit} reached while asking for {requested} bytes{waited}; \
         {in_use_slots} slots ({in_use_bytes} bytes) are held: {holders}",
        waited = match .waited { Some(d) => format!(" (waited {:.3} s)", d.as_secs_f64()), None => String::new() }
    )]
    PoolExhausted {
        limit_name: &'static str,
        limit: usize,
        requested: usize,
        in_use_slots: usize,
        in_use_bytes: usize,
        waited: Option<Duration>,
        /// A description of who holds the slots (slot id, size, holders, age).
        holders: String,
    },
    /// The pool was closed; no new slots are handed out.
    #[error("the frame pool is closed")]
    PoolClosed,
    /// A buffer that is too small for the layout it should hold.
    #[error("buffer of {got} bytes is too small: {needed} bytes needed for {what}")]
    BufferTooSmall {
        needed: usize,
        got: usize,
        what: String,
    },
    /// A foreign buffer (NumPy array, Python buffer export, DLPack tensor)
    /// whose shape, strides or item size do not describe the frame asked for.
    /// The message names the shape, the strides and what was expected.
    #[error("{0}")]
    BadBuffer(String),
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Os {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn os(op: &'static str, errno: rustix::io::Errno) -> Self {
        Error::Os {
            op,
            source: errno.into(),
        }
    }
}
