//! `framebus.FramePool` and `framebus.default_pool()`: the Python face of the
//! core pool.
//!
//! The default pool (used wherever no `pool=` is given) is bounded: its byte
//! limit is `$FRAMEBUS_MAX_BYTES` when set, else the core's default (the
//! smaller of 8 GiB and half the machine's memory), so a typo such as
//! `resize(src, 10**6, 10**6)` fails at once naming the size and the limit
//! instead of mapping terabytes.

use crate::args::{self, Int};
use crate::errors::{Error, Result};
use crate::frame::PyFrame;
use crate::wait;
use framebus_core::{Exhausted, FramePool, Lease, PixelFormat, PoolConfig};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::ops::ControlFlow::{Break, Continue};
use std::sync::OnceLock;

/// A bounded pool of memfd-backed, page-aligned frame slots.
#[pyclass(name = "FramePool", module = "framebus", frozen)]
pub struct PyFramePool {
    pub pool: FramePool,
}

/// The process-wide pool used when a feature is given no `pool=`; fails only
/// when `$FRAMEBUS_MAX_BYTES` is set to something that is not a byte count.
pub fn default_pool() -> Result<FramePool> {
    static POOL: OnceLock<FramePool> = OnceLock::new();
    if let Some(p) = POOL.get() {
        return Ok(p.clone());
    }
    let defaults = PoolConfig::default();
    let max_bytes = args::env_count("FRAMEBUS_MAX_BYTES", 1, usize::MAX)?.or(defaults.max_bytes);
    let pool = FramePool::new(PoolConfig {
        max_bytes,
        ..defaults
    });
    Ok(POOL.get_or_init(|| pool).clone())
}

/// The pool of an optional `pool=` argument, else the default pool.
pub fn pool_or_default(pool: Option<&PyFramePool>) -> Result<FramePool> {
    pool.map_or_else(default_pool, |p| Ok(p.pool.clone()))
}

pub(crate) fn parse_format(format: &str) -> Result<PixelFormat> {
    Ok(format.parse()?)
}

/// Lease `len` bytes from `pool` under `policy`, waiting (if the policy
/// blocks) in Ctrl-C-interruptible slices with the GIL released.
pub fn acquire(py: Python<'_>, pool: &FramePool, len: usize, policy: Exhausted) -> Result<Lease> {
    let Exhausted::Block(timeout) = policy else {
        return Ok(pool.acquire_with(len, Exhausted::Error)?);
    };
    let mut first = true;
    wait::wait(
        py,
        timeout,
        |slice| {
            let got = pool.acquire_slice(len, slice, first)?;
            first = false;
            Ok::<_, framebus_core::Error>(got.map_or(Continue(()), Break))
        },
        |waited, ()| match pool.acquire_with(len, Exhausted::Error) {
            Err(mut e) => {
                if let framebus_core::Error::PoolExhausted { waited: w, .. } = &mut e {
                    *w = Some(waited);
                }
                Error::Core(e)
            }
            // A slot came free at the very end: it goes back; the wait timed out.
            Ok(_) => wait::timed_out("a free pool slot", waited),
        },
    )
}

#[pymethods]
impl PyFramePool {
    /// `on_exhausted`: "raise" (default) raises `PoolExhausted` at the limit;
    /// "block" waits up to `timeout` seconds (None = forever) for a release.
    /// `pinned="cuda:0"` pins every slot for that GPU once, when it is mapped
    /// (raises `CudaUnavailable` when there is no such GPU).
    #[new]
    #[pyo3(signature = (max_bytes=None, max_slots=None, on_exhausted="raise", timeout=None, huge_pages=false, pinned=None))]
    fn new(
        max_bytes: Option<Int>,
        max_slots: Option<Int>,
        on_exhausted: &str,
        timeout: Option<f64>,
        huge_pages: bool,
        pinned: Option<&Bound<'_, PyAny>>,
    ) -> Result<Self> {
        let max_bytes = args::opt_count("max_bytes", max_bytes, 1, isize::MAX as usize)?;
        let max_slots = args::opt_count("max_slots", max_slots, 1, 1 << 20)?;
        let timeout = args::timeout("timeout", timeout)?;
        let on_exhausted = match args::choice("on_exhausted", on_exhausted, &["raise", "block"])? {
            "raise" => Exhausted::Error,
            _ => Exhausted::Block(timeout),
        };
        let config = PoolConfig {
            max_bytes,
            max_slots,
            on_exhausted,
            huge_pages,
        };
        let pool = match pinned {
            None => FramePool::new(config),
            Some(d) => FramePool::with_hook(config, crate::cuda::pin_hook(d)?),
        };
        Ok(PyFramePool { pool })
    }

    /// A writable frame in a free (or new) slot. Blocks (GIL released,
    /// Ctrl-C honoured) when the pool was made with `on_exhausted="block"`;
    /// `timeout` overrides the pool's wait for this call.
    #[pyo3(signature = (width, height, format="BGRA", stride=None, timeout=None))]
    fn acquire(
        &self,
        py: Python<'_>,
        width: Int,
        height: Int,
        format: &str,
        stride: Option<Int>,
        timeout: Option<f64>,
    ) -> Result<PyFrame> {
        let layout = args::layout(width, height, format, stride)?;
        let policy = match (self.pool.config().on_exhausted, timeout) {
            (Exhausted::Block(_), Some(t)) => Exhausted::Block(args::timeout("timeout", Some(t))?),
            (p, t) => {
                args::timeout("timeout", t)?;
                p
            }
        };
        let lease = acquire(py, &self.pool, layout.byte_len(), policy)?;
        Ok(PyFrame::from_frame(framebus_core::Frame::new(
            lease, layout,
        )?))
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
        // A pinned pool's hook adds pinned_slots, pinned_bytes, pin_register_ns, ...
        if let Some(h) = self.pool.hook() {
            for (k, v) in h.stats() {
                d.set_item(k, v)?;
            }
        }
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
fn py_default_pool() -> Result<PyFramePool> {
    Ok(PyFramePool {
        pool: default_pool()?,
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyFramePool>()?;
    m.add_function(wrap_pyfunction!(py_default_pool, m)?)?;
    Ok(())
}

crate::context::closes_on_exit!(PyFramePool, close);
