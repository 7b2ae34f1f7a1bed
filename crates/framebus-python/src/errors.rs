//! The one place where errors become Python exceptions.
//!
//! Every binding returns [`Result`]: the crates' own errors (core, capture,
//! channel, pipe, kernels), the argument layer's and Python's own all convert
//! into [`Error`] with `?`, and [`Error`] becomes a `PyErr` once, here — the
//! shape of polars-python's `PyPolarsErr`. Every exception class framebus
//! defines is defined in this file.
//!
//! The mapping:
//! * bad arguments (a value out of range, a wrong shape, an unknown name) →
//!   `ValueError`; a value of the wrong type → `TypeError`;
//! * a wait that ran out → `TimeoutError` (except a pool or a lossless channel
//!   at its limit, whose own classes say which limit);
//! * resource states → `framebus.*` classes deriving from `framebus.FramebusError`;
//! * system calls → the `OSError` subclass of their errno ([`os_error`]);
//! * CUDA: `framebus.CudaUnavailable` (what is missing), `CudaOutOfMemory`,
//!   `CudaError` (a driver call failed), device pools as host pools.

use framebus_capture::CaptureError as CapError;
use framebus_channel::ChannelError;
use framebus_kernels::KernelError;
use framebus_pipe::PipeError;
use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyFileExistsError, PyFileNotFoundError, PyOSError, PyPermissionError,
    PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;

create_exception!(
    framebus,
    FramebusError,
    PyException,
    "Base class of framebus errors."
);
create_exception!(
    framebus,
    PoolExhausted,
    FramebusError,
    "Every slot is in use and the pool is at its limit."
);
create_exception!(
    framebus,
    PoolClosed,
    FramebusError,
    "The frame pool was closed."
);
create_exception!(
    framebus,
    ChannelClosed,
    FramebusError,
    "The other end of a channel went away, or this end was closed."
);
create_exception!(
    framebus,
    ChannelFull,
    FramebusError,
    "A lossless channel's subscriber queue is full (on_full=\"raise\", or the block timed out)."
);
create_exception!(
    framebus,
    CaptureError,
    FramebusError,
    "The screen could not be captured."
);
create_exception!(
    framebus,
    FFmpegError,
    FramebusError,
    "FFmpeg failed; the message (and the `stderr` attribute) holds the tail of its stderr."
);
create_exception!(
    framebus,
    CudaError,
    FramebusError,
    "A CUDA driver call failed (the message names the call and the driver's error)."
);
create_exception!(
    framebus,
    CudaUnavailable,
    CudaError,
    "CUDA cannot be used here; the message says what is missing (driver library, device, newer driver, NVRTC)."
);
create_exception!(
    framebus,
    CudaOutOfMemory,
    CudaError,
    "The GPU has no memory left for the request."
);

/// Result alias of every binding.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any failure a binding can report.
#[derive(Debug)]
pub enum Error {
    Core(framebus_core::Error),
    Capture(CapError),
    Channel(ChannelError),
    Pipe(PipeError),
    Kernel(KernelError),
    Cuda(framebus_cuda::CudaError),
    #[cfg(feature = "zenoh")]
    Zenoh(framebus_zenoh::ZenohError),
    /// A value out of range or of the wrong shape (`ValueError`).
    Value(String),
    /// A value of the wrong type (`TypeError`).
    Type(String),
    /// A wait that ran out (`TimeoutError`).
    Timeout(String),
    /// Something that went wrong in Python itself (a signal handler's
    /// `KeyboardInterrupt`, a failed `__index__`, ...), passed on unchanged.
    Py(PyErr),
}

impl Error {
    /// `ValueError` with this message.
    pub fn value(msg: impl Into<String>) -> Self {
        Error::Value(msg.into())
    }

    /// `TypeError` with this message.
    pub fn type_(msg: impl Into<String>) -> Self {
        Error::Type(msg.into())
    }
}

macro_rules! from_error {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::$v(e)
            }
        })*
    };
}

from_error!(
    framebus_core::Error => Core,
    CapError => Capture,
    ChannelError => Channel,
    PipeError => Pipe,
    KernelError => Kernel,
    framebus_cuda::CudaError => Cuda,
    PyErr => Py,
);

#[cfg(feature = "zenoh")]
from_error!(framebus_zenoh::ZenohError => Zenoh);

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        match e {
            Error::Core(e) => core_err(e),
            Error::Capture(e) => capture_err(e),
            Error::Channel(e) => channel_err(e),
            Error::Pipe(e) => pipe_err(e),
            Error::Kernel(e) => kernel_err(e),
            Error::Cuda(e) => cuda_err(e),
            #[cfg(feature = "zenoh")]
            Error::Zenoh(e) => zenoh_err(e),
            Error::Value(m) => PyValueError::new_err(m),
            Error::Type(m) => PyTypeError::new_err(m),
            Error::Timeout(m) => PyTimeoutError::new_err(m),
            Error::Py(e) => e,
        }
    }
}

/// The `OSError` subclass of `errno` (`FileNotFoundError`, `BrokenPipeError`, …).
pub fn os_error(errno: Option<i32>, msg: String) -> PyErr {
    match errno {
        Some(code) => PyOSError::new_err((code, msg)),
        None => PyOSError::new_err(msg),
    }
}

fn core_err(e: framebus_core::Error) -> PyErr {
    use framebus_core::Error as E;
    let msg = e.to_string();
    match e {
        E::PoolExhausted { .. } => PoolExhausted::new_err(msg),
        E::PoolClosed => PoolClosed::new_err(msg),
        E::Os { source, .. } => os_error(source.raw_os_error(), msg),
        // Everything else is a bad size, format, stride or buffer.
        _ => PyValueError::new_err(msg),
    }
}

fn capture_err(e: CapError) -> PyErr {
    match e {
        CapError::Core(c) => core_err(c),
        CapError::Timeout(_) => PyTimeoutError::new_err(e.to_string()),
        e if e.is_bad_input() => PyValueError::new_err(e.to_string()),
        e => CaptureError::new_err(e.to_string()),
    }
}

fn channel_err(e: ChannelError) -> PyErr {
    use ChannelError as C;
    let msg = e.to_string();
    match e {
        C::InvalidName { .. } | C::InvalidArgument { .. } => PyValueError::new_err(msg),
        C::NameInUse(_) => PyFileExistsError::new_err(msg),
        C::NotFound { .. } => PyFileNotFoundError::new_err(msg),
        C::Closed(_) => ChannelClosed::new_err(msg),
        C::Timeout(..) => PyTimeoutError::new_err(msg),
        C::Full { .. } => ChannelFull::new_err(msg),
        C::WrongUser { .. } => PyPermissionError::new_err(msg),
        C::Core(c) => core_err(c),
        C::Os { source, .. } => os_error(source.raw_os_error(), msg),
        _ => FramebusError::new_err(msg),
    }
}

fn pipe_err(e: PipeError) -> PyErr {
    use PipeError as P;
    let msg = e.to_string();
    match e {
        P::Write(w) => PyOSError::new_err((w.errno, msg)),
        P::InvalidArgument { .. } | P::FrameMismatch { .. } | P::Layout(_) | P::WriterClosed => {
            PyValueError::new_err(msg)
        }
        P::FfmpegNotFound(_) => PyFileNotFoundError::new_err(msg),
        P::Ffmpeg { stderr_tail, .. } => Python::attach(|py| {
            let err = FFmpegError::new_err(msg);
            // Setting an attribute on a fresh exception cannot fail in practice;
            // if it did, the message still carries the same tail.
            let _ = err.value(py).setattr("stderr", stderr_tail);
            err
        }),
        P::Spawn { source, .. } | P::FfmpegSpawn { source, .. } | P::Os { source, .. } => {
            os_error(source.raw_os_error(), msg)
        }
        _ => FramebusError::new_err(msg),
    }
}

fn kernel_err(e: KernelError) -> PyErr {
    match e {
        KernelError::Core(e) => core_err(e),
        KernelError::ThreadPool { .. } => FramebusError::new_err(e.to_string()),
        e => PyValueError::new_err(e.to_string()),
    }
}

#[cfg(feature = "zenoh")]
fn zenoh_err(e: framebus_zenoh::ZenohError) -> PyErr {
    use framebus_zenoh::ZenohError as Z;
    let msg = e.to_string();
    match e {
        Z::Core(c) => core_err(c),
        Z::Closed { .. } => ChannelClosed::new_err(msg),
        Z::Timeout(..) | Z::Subscribers { .. } => PyTimeoutError::new_err(msg),
        e if e.is_bad_input() => PyValueError::new_err(msg),
        _ => FramebusError::new_err(msg),
    }
}

fn cuda_err(e: framebus_cuda::CudaError) -> PyErr {
    use framebus_cuda::CudaError as C;
    let msg = e.to_string();
    match e {
        C::Unavailable(_) => CudaUnavailable::new_err(msg),
        C::OutOfMemory { .. } => CudaOutOfMemory::new_err(msg),
        C::PoolExhausted(_) => PoolExhausted::new_err(msg),
        C::PoolClosed => PoolClosed::new_err(msg),
        C::Invalid { .. } => PyValueError::new_err(msg),
        C::Timeout(_) => PyTimeoutError::new_err(msg),
        C::Core(c) => core_err(c),
        _ => CudaError::new_err(msg),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("FramebusError", py.get_type::<FramebusError>())?;
    m.add("PoolExhausted", py.get_type::<PoolExhausted>())?;
    m.add("PoolClosed", py.get_type::<PoolClosed>())?;
    m.add("ChannelClosed", py.get_type::<ChannelClosed>())?;
    m.add("ChannelFull", py.get_type::<ChannelFull>())?;
    m.add("CaptureError", py.get_type::<CaptureError>())?;
    m.add("FFmpegError", py.get_type::<FFmpegError>())?;
    m.add("CudaError", py.get_type::<CudaError>())?;
    m.add("CudaUnavailable", py.get_type::<CudaUnavailable>())?;
    m.add("CudaOutOfMemory", py.get_type::<CudaOutOfMemory>())?;
    Ok(())
}
