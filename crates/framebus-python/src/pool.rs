//! `framebus.FramePool`: Python face of the core pool.

use crate::errors::to_pyerr;
use crate::frame::PyFrame;
use framebus_core::{Exhausted, FramePool, PixelFormat, PoolConfig};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::OnceLock;
use std::time::Duration;

/// A bounded pool of memfd-backed, page-aligned frame slots.
#[pyclass(name = "FramePool", module = "framebus", frozen)]
pub struct PyFramePool {
    pub pool: FramePool,
}

/// The process-wide pool used when a feature is given no `pool=`.
pub fn default_pool() -> FramePool {
    static POOL: OnceLock<FramePool> = OnceLock::new();
    POOL.get_or_init(FramePool::default).clone()
}

pub(crate) fn check_size(what: &'static str, v: i64) -> PyResult<usize> {
    if v <= 0 {
        return Err(PyValueError::new_err(format!(
            "invalid {what}: {v} (must be at least 1)"
        )));
    }
    Ok(v as usize)
}

pub(crate) fn parse_format(format: &str) -> PyResult<PixelFormat> {
    format.parse().map_err(to_pyerr)
}

pub(crate) fn parse_timeout(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(PyValueError::new_err(format!(
            "invalid timeout: {t} (must be a finite number of seconds >= 0, or None)"
        ))),
    }
}

#[pymethods]
impl PyFramePool {
    /// `on_exhausted`: "raise" (default) raises `PoolExhausted` at the limit;
    /// "block" waits up to `timeout` seconds (None = forever) for a release.
    #[new]
    #[pyo3(signature = (max_bytes=None, max_slots=None, on_exhausted="raise", timeout=None, huge_pages=false))]
    fn new(
        max_bytes: Option<i64>,
        max_slots: Option<i64>,
        on_exhausted: &str,
        timeout: Option<f64>,
        huge_pages: bool,
    ) -> PyResult<Self> {
        let max_bytes = max_bytes.map(|v| check_size("max_bytes", v)).transpose()?;
        let max_slots = max_slots.map(|v| check_size("max_slots", v)).transpose()?;
        let timeout = parse_timeout(timeout)?;
        let on_exhausted = match on_exhausted {
            "raise" => Exhausted::Error,
            "block" => Exhausted::Block(timeout),
            other => {
                return Err(PyValueError::new_err(format!(
                    "invalid on_exhausted: {other:?} (expected \"raise\" or \"block\")"
                )))
            }
        };
        Ok(PyFramePool {
            pool: FramePool::new(PoolConfig {
                max_bytes,
                max_slots,
                on_exhausted,
                huge_pages,
            }),
        })
    }

    /// A writable frame in a free (or new) slot. Blocks with the GIL released
    /// when the pool was made with `on_exhausted="block"`; `timeout` overrides
    /// the pool's wait for this call.
    #[pyo3(signature = (width, height, format="BGRA", stride=None, timeout=None))]
    fn acquire(
        &self,
        py: Python<'_>,
        width: i64,
        height: i64,
        format: &str,
        stride: Option<i64>,
        timeout: Option<f64>,
    ) -> PyResult<PyFrame> {
        let width = check_size("width", width)?;
        let height = check_size("height", height)?;
        let stride = stride.map(|s| check_size("stride", s)).transpose()?;
        let format = parse_format(format)?;
        let layout =
            framebus_core::FrameLayout::new(width, height, format, stride).map_err(to_pyerr)?;
        let policy = match (self.pool.config().on_exhausted, parse_timeout(timeout)?) {
            (Exhausted::Block(_), Some(t)) => Exhausted::Block(Some(t)),
            (p, _) => p,
        };
        let pool = &self.pool;
        let lease = py
            .detach(|| pool.acquire_with(layout.byte_len(), policy))
            .map_err(to_pyerr)?;
        let frame = framebus_core::Frame::new(lease, layout).map_err(to_pyerr)?;
        Ok(PyFrame::from_frame(frame))
    }

    /// Accounting at this instant: slots, bytes mapped / in use / free, high-water, counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.pool.stats();
        let d = PyDict::new(py);
        d.set_item("slots", s.slots)?;
        d.set_item("slots_in_use", s.slots_in_use)?;
        d.set_item("slots_free", s.slots_free)?;
        d.set_item("bytes_mapped", s.bytes_mapped)?;
        d.set_item("bytes_in_use", s.bytes_in_use)?;
        d.set_item("bytes_free", s.bytes_free)?;
        d.set_item("high_water_bytes", s.high_water_bytes)?;
        d.set_item("max_bytes", s.max_bytes)?;
        d.set_item("max_slots", s.max_slots)?;
        d.set_item("acquires", s.acquires)?;
        d.set_item("reuses", s.reuses)?;
        d.set_item("maps", s.maps)?;
        d.set_item("unmaps", s.unmaps)?;
        d.set_item("waits", s.waits)?;
        d.set_item("exhausted", s.exhausted)?;
        d.set_item("closed", s.closed)?;
        Ok(d)
    }

    /// Unmap every free slot; returns the bytes given back to the OS.
    fn trim(&self, py: Python<'_>) -> usize {
        let pool = &self.pool;
        py.detach(|| pool.trim())
    }

    /// Refuse new acquires and unmap free slots; held frames stay valid.
    fn close(&self, py: Python<'_>) {
        let pool = &self.pool;
        py.detach(|| pool.close())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.pool.is_closed()
    }

    fn __repr__(&self) -> String {
        let s = self.pool.stats();
        format!(
            "FramePool(slots={}, in_use={}, bytes_mapped={}, max_bytes={:?}, max_slots={:?})",
            s.slots, s.slots_in_use, s.bytes_mapped, s.max_bytes, s.max_slots
        )
    }
}

/// The pool used when no `pool=` is given.
#[pyfunction(name = "default_pool")]
fn py_default_pool() -> PyFramePool {
    PyFramePool {
        pool: default_pool(),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyFramePool>()?;
    m.add_function(wrap_pyfunction!(py_default_pool, m)?)?;
    Ok(())
}

crate::context::closes_on_exit!(PyFramePool, close);
