//! The kernels' error type. Every variant names the values that were wrong, so the
//! message alone says what to fix; the Python bindings map it to `ValueError`.
//! Depends on nothing but `framebus-core`'s types.

use crate::Simd;
use framebus_core::PixelFormat;

/// Result alias for the kernels crate.
pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// Errors raised by conversions, resizes and tensor output.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A geometry error from the core (zero width, bad stride, odd YUV size, ...).
    #[error(transparent)]
    Core(#[from] framebus_core::Error),
    /// A source or destination buffer shorter than its geometry needs.
    #[error(
        "{what} buffer of {got} bytes is too small: {needed} bytes needed for a \
         {width}x{height} {format} image with stride {stride}"
    )]
    BufferTooSmall {
        what: &'static str,
        needed: usize,
        got: usize,
        width: usize,
        height: usize,
        format: PixelFormat,
        stride: usize,
    },
    /// A pair of formats (or a format for an operation) that is not implemented.
    #[error("cannot {op} {from} to {to}: {why}")]
    Unsupported {
        op: &'static str,
        from: PixelFormat,
        to: PixelFormat,
        why: &'static str,
    },
    /// Source and destination sizes differ where they must be equal.
    #[error("size mismatch: source is {sw}x{sh} but destination is {dw}x{dh}")]
    SizeMismatch {
        sw: usize,
        sh: usize,
        dw: usize,
        dh: usize,
    },
    /// A SIMD level was forced that this CPU (or build) cannot run.
    #[error("SIMD level {level} is not available on this CPU (available: {available})")]
    SimdUnavailable { level: Simd, available: String },
    /// A SIMD level name (argument or `FRAMEBUS_SIMD`) that is not known.
    #[error("unknown SIMD level {0:?}; expected one of scalar, ssse3, avx2, neon")]
    UnknownSimd(String),
    /// Any other bad argument.
    #[error("invalid {what}: {value} ({why})")]
    Invalid {
        what: &'static str,
        value: String,
        why: String,
    },
    /// The caller's cancel flag was set (see `convert_cancellable`); the
    /// destination is partly written.
    #[error(
        "cancelled: the cancel flag was set before the kernel finished (the output is incomplete)"
    )]
    Cancelled,
    /// Rayon could not start a thread pool of the requested size.
    #[error("could not start a {threads}-thread pool: {msg}")]
    ThreadPool { threads: usize, msg: String },
}
