//! `framebus.Frame`: a zero-copy Python view of a slot.
//!
//! Exports and who keeps the slot alive:
//! * buffer protocol (`memoryview`, `np.asarray`, Pillow, OpenCV): each export
//!   stores its own `Lease` clone in `Py_buffer.internal`, dropped in
//!   `__releasebuffer__`;
//! * `__dlpack__`: the capsule's manager context owns a `Lease` (see dlpack.rs);
//! * `__array_interface__`: consumers keep the Frame object itself alive and
//!   read the raw pointer, so once it was handed out, `release()` parks the
//!   lease until the Frame object is deallocated instead of dropping it.
//!
//! `release()` (or leaving a `with` block) drops the frame's own lease; any
//! later use of the Frame raises instead of reading freed memory.

use crate::errors::Result;
use crate::pool::default_pool;
use framebus_core::{Frame, FrameLayout, Lease, PixelFormat};
use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::ffi::{c_int, CStr};
use std::sync::{Mutex, MutexGuard};

struct FrameState {
    frame: Option<Frame>,
    /// Lease kept only for `__array_interface__` consumers after `release()`.
    parked: Option<Lease>,
    interface_exported: bool,
}

/// An image in a framebus slot (zero-copy to NumPy, DLPack, Pillow, ...).
#[pyclass(name = "Frame", module = "framebus", frozen)]
pub struct PyFrame {
    layout: FrameLayout,
    timestamp_ns: u64,
    seq: u64,
    writable: bool,
    address: usize,
    slot_id: u64,
    state: Mutex<FrameState>,
}

/// What one buffer export owns, boxed into `Py_buffer.internal`.
struct BufferExport {
    _lease: Lease,
    shape: [isize; 3],
    strides: [isize; 3],
}

pub(crate) fn format_code(format: PixelFormat) -> &'static CStr {
    if format.sample_bytes() == 2 {
        c"H"
    } else {
        c"B"
    }
}

impl PyFrame {
    /// Wrap a core frame; writable iff the core frame is.
    pub fn from_frame(frame: Frame) -> PyFrame {
        PyFrame {
            layout: *frame.layout(),
            timestamp_ns: frame.timestamp_ns(),
            seq: frame.seq(),
            writable: frame.is_writable(),
            address: frame.as_ptr() as usize,
            slot_id: frame.lease().slot_id(),
            state: Mutex::new(FrameState {
                frame: Some(frame),
                parked: None,
                interface_exported: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FrameState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A clone of the core frame (one more lease), or `ValueError` if released.
    pub fn frame(&self) -> PyResult<Frame> {
        self.lock().frame.clone().ok_or_else(released_error)
    }
}

/// The pool a copy of `frame` goes to: its own while open, else the default pool.
fn copy_pool(frame: &Frame) -> Result<framebus_core::FramePool> {
    frame
        .lease()
        .pool()
        .filter(|p| !p.is_closed())
        .map_or_else(default_pool, Ok)
}

fn released_error() -> PyErr {
    PyValueError::new_err("operation on a released frame")
}

#[pymethods]
impl PyFrame {
    #[getter]
    fn width(&self) -> usize {
        self.layout.width
    }
    #[getter]
    fn height(&self) -> usize {
        self.layout.height
    }
    /// Bytes from one row to the next.
    #[getter]
    fn stride(&self) -> usize {
        self.layout.stride
    }
    /// Pixel format name, e.g. "BGRA".
    #[getter]
    fn format(&self) -> &'static str {
        self.layout.format.name()
    }
    /// NumPy shape: (h, w, c), (h, w) for one channel, (h*3/2, w) for NV12/I420.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.layout.shape())
    }
    /// Bytes the frame covers.
    #[getter]
    fn nbytes(&self) -> usize {
        self.layout.byte_len()
    }
    /// Capture/acquire time in CLOCK_MONOTONIC nanoseconds (`time.monotonic_ns()`).
    #[getter]
    fn timestamp(&self) -> u64 {
        self.timestamp_ns
    }
    /// Producer's sequence number (gaps mean dropped frames).
    #[getter]
    fn seq(&self) -> u64 {
        self.seq
    }
    #[getter]
    fn readonly(&self) -> bool {
        !self.writable
    }
    #[getter]
    fn released(&self) -> bool {
        self.lock().frame.is_none()
    }
    /// Address of the first pixel (for identity checks; valid only while held).
    #[getter]
    fn address(&self) -> usize {
        self.address
    }
    /// Id of the pool slot holding the pixels.
    #[getter]
    fn slot_id(&self) -> u64 {
        self.slot_id
    }

    /// Drop this object's hold on the slot now. Exports (arrays, memoryviews,
    /// DLPack tensors) keep their own hold; the slot returns to the pool when
    /// the last one goes. Idempotent.
    fn release(&self) {
        let mut st = self.lock();
        let frame = st.frame.take();
        if st.interface_exported {
            st.parked = frame.map(Frame::into_lease);
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        _t: Option<Bound<'_, PyAny>>,
        _v: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.release();
        false
    }

    /// A new writable frame with a copy of the pixels, from the same pool —
    /// or from the (bounded) default pool when that one is closed or the
    /// frame came from another process — so a copy always obeys a pool limit.
    fn copy(&self, py: Python<'_>) -> Result<PyFrame> {
        let frame = self.frame()?;
        let pool = copy_pool(&frame)?;
        let copied = py.detach(|| frame.copy(Some(&pool)))?;
        Ok(PyFrame::from_frame(copied))
    }

    /// A read-only Frame over the same slot (no copy): hand it to code that must
    /// not write, while keeping this writable one.
    fn as_readonly(&self) -> PyResult<PyFrame> {
        Ok(PyFrame::from_frame(self.frame()?.into_readonly()))
    }

    /// A NumPy array over the same memory (or a copy with `copy=True`).
    #[pyo3(signature = (copy=false))]
    fn to_numpy<'py>(slf: &Bound<'py, Self>, copy: bool) -> PyResult<Bound<'py, PyAny>> {
        let np = slf.py().import("numpy")?;
        if copy {
            np.call_method1("array", (slf,))
        } else {
            np.call_method1("asarray", (slf,))
        }
    }

    /// The NumPy array interface (v3). The consumer keeps this Frame alive.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mut st = self.lock();
        let frame = st.frame.as_ref().ok_or_else(released_error)?;
        let ptr = frame.as_ptr() as usize;
        st.interface_exported = true;
        drop(st);
        let l = &self.layout;
        let d = PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("shape", PyTuple::new(py, l.shape())?)?;
        let typestr = if l.format.sample_bytes() == 2 {
            if cfg!(target_endian = "little") {
                "<u2"
            } else {
                ">u2"
            }
        } else {
            "|u1"
        };
        d.set_item("typestr", typestr)?;
        d.set_item("data", (ptr, !self.writable))?;
        if l.is_contiguous() {
            d.set_item("strides", py.None())?;
        } else {
            d.set_item("strides", PyTuple::new(py, l.byte_strides())?)?;
        }
        Ok(d)
    }

    /// DLPack export (1.x versioned capsule when `max_version >= (1, 0)`, else legacy).
    #[pyo3(signature = (*, stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__<'py>(
        &self,
        py: Python<'py>,
        stream: Option<Bound<'py, PyAny>>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(s) = stream {
            if !s.is_none() {
                return Err(PyBufferError::new_err(format!(
                    "stream={s} is not supported for CPU frames (must be None)"
                )));
            }
        }
        crate::dlpack::check_dl_device(dl_device, (crate::dlpack::KDL_CPU, 0))?;
        let versioned = max_version.is_some_and(|(major, _)| major >= 1);
        let frame = self.frame()?;
        let must_copy = copy == Some(true) || (!versioned && !self.writable && copy.is_none());
        if !versioned && !self.writable && copy == Some(false) {
            return Err(PyBufferError::new_err(
                "cannot export a read-only frame without a copy through legacy DLPack \
                 (it cannot signal read-only); ask for max_version=(1, 0) or copy=True",
            ));
        }
        let (frame, copied) = if must_copy {
            let pool = copy_pool(&frame)?;
            let copied = py.detach(|| frame.copy(Some(&pool)));
            (copied.map_err(crate::errors::Error::from)?, true)
        } else {
            (frame, false)
        };
        // A copy is a fresh writable frame; otherwise the frame is ours, as writable as we are.
        let readonly = !frame.is_writable();
        crate::dlpack::export(py, frame, versioned, readonly, copied)
    }

    fn __dlpack_device__(&self) -> (i32, i32) {
        (crate::dlpack::KDL_CPU, 0)
    }

    /// # Safety
    /// Called by CPython with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        if view.is_null() {
            return Err(PyBufferError::new_err("NULL Py_buffer"));
        }
        if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE && !this.writable {
            return Err(PyBufferError::new_err(
                "frame is read-only (produced by framebus); use frame.copy() for a writable one",
            ));
        }
        let l = this.layout;
        let want_strides = flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES;
        let want_nd = flags & ffi::PyBUF_ND == ffi::PyBUF_ND;
        if !l.is_contiguous() {
            let wants_contig = flags & ffi::PyBUF_C_CONTIGUOUS == ffi::PyBUF_C_CONTIGUOUS
                || flags & ffi::PyBUF_F_CONTIGUOUS == ffi::PyBUF_F_CONTIGUOUS
                || flags & ffi::PyBUF_ANY_CONTIGUOUS == ffi::PyBUF_ANY_CONTIGUOUS;
            if !want_strides || wants_contig {
                return Err(PyBufferError::new_err(format!(
                    "frame rows are padded (stride {} > row {} bytes): only strided buffer \
                     requests can see it (memoryview and numpy do), or use frame.copy() with \
                     a tight stride",
                    l.stride,
                    l.row_bytes()
                )));
            }
        }
        let lease = {
            let st = this.lock();
            st.frame
                .as_ref()
                .ok_or_else(released_error)?
                .lease()
                .clone()
        };
        let ptr = lease.as_ptr();
        let shape_v = l.shape();
        let strides_v = l.byte_strides();
        let mut export = Box::new(BufferExport {
            _lease: lease,
            shape: [0; 3],
            strides: [0; 3],
        });
        for (i, (s, st)) in shape_v.iter().zip(&strides_v).enumerate() {
            export.shape[i] = *s as isize;
            export.strides[i] = *st as isize;
        }
        let itemsize = l.format.sample_bytes() as isize;
        let len = shape_v.iter().product::<usize>() as isize * itemsize;
        let export = Box::into_raw(export);
        // SAFETY: CPython passes a valid, writable Py_buffer (checked non-null);
        // `export` is a live heap allocation whose shape/strides arrays outlive the
        // view (freed only in __releasebuffer__); the format string is 'static;
        // `slf.into_ptr()` transfers one strong reference to view.obj, which
        // CPython releases in PyBuffer_Release.
        unsafe {
            (*view).buf = ptr.cast();
            (*view).len = len;
            (*view).readonly = c_int::from(!this.writable);
            (*view).itemsize = itemsize;
            (*view).format = if flags & ffi::PyBUF_FORMAT == ffi::PyBUF_FORMAT {
                format_code(l.format).as_ptr().cast_mut()
            } else {
                std::ptr::null_mut()
            };
            if want_nd {
                (*view).ndim = shape_v.len() as c_int;
                (*view).shape = (*export).shape.as_mut_ptr();
            } else {
                (*view).ndim = 1;
                (*view).shape = std::ptr::null_mut();
            }
            (*view).strides = if want_strides {
                (*export).strides.as_mut_ptr()
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = export.cast();
            (*view).obj = slf.into_any().into_ptr();
        }
        Ok(())
    }

    /// # Safety
    /// Called by CPython with a view previously filled by `__getbuffer__`.
    unsafe fn __releasebuffer__(&self, view: *mut ffi::Py_buffer) {
        // SAFETY: `internal` was set in __getbuffer__ to a Box<BufferExport> raw
        // pointer and CPython calls releasebuffer exactly once per export; we
        // null it so a double call cannot double free.
        unsafe {
            let internal = (*view).internal as *mut BufferExport;
            if !internal.is_null() {
                (*view).internal = std::ptr::null_mut();
                drop(Box::from_raw(internal));
            }
        }
    }

    fn __repr__(&self) -> String {
        let released = if self.lock().frame.is_none() {
            ", released"
        } else {
            ""
        };
        format!(
            "<framebus.Frame {}x{} {} stride={} seq={} slot={}{}{}>",
            self.layout.width,
            self.layout.height,
            self.layout.format,
            self.layout.stride,
            self.seq,
            self.slot_id,
            if self.writable { "" } else { " readonly" },
            released
        )
    }
}

/// Pixel-format names framebus knows.
#[pyfunction]
fn formats() -> Vec<&'static str> {
    PixelFormat::NAMES.to_vec()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyFrame>()?;
    m.add_function(wrap_pyfunction!(formats, m)?)?;
    Ok(())
}
