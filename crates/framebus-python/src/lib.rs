//! `framebus._framebus`: the PyO3 bindings.
//!
//! Conversion, GIL release and error mapping only — the logic lives in the
//! feature crates. Each feature has one file with a `register` function; the
//! mechanisms they share exist once each: arguments (`args`), errors
//! (`errors`), blocking waits (`wait`), foreign buffers (`buffer`) and the
//! `with` protocol (`context`).

mod args;
mod buffer;
pub mod capture;
mod channel;
mod cli;
mod context;
mod cuda;
mod dlpack;
pub mod errors;
pub mod frame;
mod kernels;
mod pipe;
pub mod pool;
mod wait;
#[cfg(feature = "zenoh")]
mod zenoh;

use pyo3::prelude::*;

#[pymodule]
fn _framebus(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    pool::register(m)?;
    frame::register(m)?;
    capture::register(m)?;
    kernels::register(m)?;
    channel::register(m)?;
    pipe::register(m)?;
    cli::register(m)?;
    cuda::register(m)?;
    #[cfg(feature = "zenoh")]
    zenoh::register(m)?;
    Ok(())
}
