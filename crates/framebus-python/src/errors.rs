//! The one place core and feature errors become Python exceptions.
//!
//! Bad arguments → `ValueError`; resource states → `framebus.*` exceptions that
//! all derive from `framebus.FramebusError`; OS failures → `OSError` with errno.

use framebus_core::Error;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyValueError};
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
    "The other end of a channel went away."
);
create_exception!(
    framebus,
    CaptureError,
    FramebusError,
    "The screen could not be captured."
);

/// Map a core error to its Python exception.
pub fn to_pyerr(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::InvalidDimension { .. }
        | Error::UnknownFormat(_)
        | Error::InvalidStride { .. }
        | Error::TooLarge { .. }
        | Error::BufferTooSmall { .. } => PyValueError::new_err(msg),
        Error::PoolExhausted { .. } => PoolExhausted::new_err(msg),
        Error::PoolClosed => PoolClosed::new_err(msg),
        Error::Os { source, .. } => match source.raw_os_error() {
            Some(code) => PyOSError::new_err((code, msg)),
            None => PyOSError::new_err(msg),
        },
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("FramebusError", py.get_type::<FramebusError>())?;
    m.add("PoolExhausted", py.get_type::<PoolExhausted>())?;
    m.add("PoolClosed", py.get_type::<PoolClosed>())?;
    m.add("ChannelClosed", py.get_type::<ChannelClosed>())?;
    m.add("CaptureError", py.get_type::<CaptureError>())?;
    Ok(())
}
