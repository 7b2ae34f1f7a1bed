//! The one way framebus takes pixels from Python: a `framebus.Frame` (its
//! lease) or any other object's buffer export ([`BufferExport`]), decided once
//! in [`Pixels::from_py`] and used by the pipe, `VideoWriter`, the kernels and
//! the channel alike.
//!
//! A [`BufferExport`] is a live `PyObject_GetBuffer` export: the exporter
//! cannot free, resize or unmap the memory until it is released, so it can be
//! handed to a writer thread. Releasing needs the GIL, and the writer threads
//! never take it (they cannot deadlock with a thread holding the GIL, nor
//! touch a finalizing interpreter): an export dropped without the GIL is
//! parked and released by [`release_finished`] at the start and end of every
//! call that queues exports. Dropped with the GIL held, it is released at
//! once. The boxed `Py_buffer`s are recycled, so a warm pipe allocates nothing
//! per frame.
//!
//! Geometry comes from the core's one "strides → layout" function
//! (`FrameLayout::from_strides`): a buffer whose shape does not match the
//! image asked for is an error naming both, never a silently cropped or
//! reinterpreted frame.

use crate::errors::{Error, Result};
use crate::frame::PyFrame;
use framebus_core::{Expected, Frame, FrameLayout, PixelFormat, RowSpan, StridedView};
use pyo3::ffi;
use pyo3::prelude::*;
use std::sync::{Mutex, MutexGuard};

/// A boxed `Py_buffer` (boxed so its address never changes while exported).
type ViewBox = Box<ffi::Py_buffer>;

/// Exports dropped without the GIL, waiting to be released.
static FINISHED: Mutex<Vec<SendView>> = Mutex::new(Vec::new());
/// Released `Py_buffer` boxes, reused for the next export.
static SPARE: Mutex<Vec<SendView>> = Mutex::new(Vec::new());

/// A `Py_buffer` box that may cross threads (see [`BufferExport`]'s `Send`).
struct SendView(ViewBox);

// SAFETY: the Py_buffer is only read or released with the GIL held; moving the
// box between threads moves plain pointers and integers.
unsafe impl Send for SendView {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Release every export that was dropped without the GIL. One at a time, with
/// no lock held while releasing: a release may run Python code
/// (`__releasebuffer__`, `__del__`) that calls back into framebus.
pub fn release_finished(_py: Python<'_>) {
    loop {
        let Some(mut view) = lock(&FINISHED).pop() else {
            return;
        };
        // SAFETY: `view` was filled by a successful PyObject_GetBuffer and is
        // released exactly once, here, with the GIL held (`_py`).
        unsafe { ffi::PyBuffer_Release(&mut *view.0) };
        lock(&SPARE).push(view);
    }
}

/// A live buffer export of a Python object.
pub struct BufferExport {
    view: Option<ViewBox>,
}

// SAFETY: the view's pointers (`buf`, `shape`, `strides`, `format`) stay valid
// while the export lives, whatever thread holds it; the view itself is only
// released with the GIL held (in `Drop` when the GIL is held, else parked for
// `release_finished`), and `obj` is a strong reference that keeps the exporter
// alive meanwhile.
unsafe impl Send for BufferExport {}
// SAFETY: shared access only reads the view's plain fields.
unsafe impl Sync for BufferExport {}

impl BufferExport {
    /// Export `obj`'s buffer, with strides and item format (`writable`: ask
    /// for a writable one). The error names the object's type.
    pub fn new(obj: &Bound<'_, PyAny>, writable: bool) -> Result<BufferExport> {
        let mut view = lock(&SPARE).pop().map_or_else(
            // SAFETY: Py_buffer is plain data (pointers and integers); all-zero is valid.
            || Box::new(unsafe { std::mem::zeroed::<ffi::Py_buffer>() }),
            |v| v.0,
        );
        let flags =
            ffi::PyBUF_STRIDES | ffi::PyBUF_FORMAT | if writable { ffi::PyBUF_WRITABLE } else { 0 };
        // SAFETY: `obj` is a live object (the GIL is held through `obj`) and
        // `view` is ours to fill.
        let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) };
        if rc != 0 {
            lock(&SPARE).push(SendView(view));
            let cause = PyErr::take(obj.py());
            let type_name = obj
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            let what = if writable {
                "a writable buffer"
            } else {
                "a buffer"
            };
            // No buffer at all is a TypeError (as for memoryview(obj)); a
            // buffer that refuses (read-only, ...) is a ValueError.
            let no_buffer = cause
                .as_ref()
                .is_none_or(|c| c.is_instance_of::<pyo3::exceptions::PyTypeError>(obj.py()));
            let msg = format!(
                "expected a framebus.Frame or an object exporting {what} (NumPy array, \
                 bytearray, memoryview), got {type_name}{}",
                cause.map(|c| format!(" ({c})")).unwrap_or_default()
            );
            return Err(if no_buffer {
                Error::type_(msg)
            } else {
                Error::value(msg)
            });
        }
        Ok(BufferExport { view: Some(view) })
    }

    fn view(&self) -> &ffi::Py_buffer {
        self.view
            .as_deref()
            .expect("a BufferExport holds its view until dropped")
    }

    /// Address of the first byte.
    pub fn ptr(&self) -> *mut u8 {
        self.view().buf.cast()
    }

    /// Bytes of item data the export covers.
    pub fn len(&self) -> usize {
        self.view().len.max(0) as usize
    }

    pub fn itemsize(&self) -> usize {
        self.view().itemsize.max(1) as usize
    }

    /// (shape, byte strides); a 0-d export is one dimension of its items.
    pub fn dims(&self) -> (Vec<usize>, Vec<isize>) {
        let v = self.view();
        let n = v.ndim.max(0) as usize;
        if n == 0 || v.shape.is_null() {
            return (vec![self.len() / self.itemsize()], vec![v.itemsize]);
        }
        // SAFETY: with PyBUF_STRIDES the exporter fills `shape` (and `strides`
        // unless the buffer is C-contiguous) with `ndim` entries, valid while
        // the export lives.
        let shape: Vec<usize> = unsafe { std::slice::from_raw_parts(v.shape, n) }
            .iter()
            .map(|&d| d.max(0) as usize)
            .collect();
        let strides = if v.strides.is_null() {
            let mut s = vec![v.itemsize; n];
            for i in (0..n - 1).rev() {
                s[i] = s[i + 1] * shape[i + 1] as isize;
            }
            s
        } else {
            // SAFETY: as above, `strides` has `ndim` entries.
            unsafe { std::slice::from_raw_parts(v.strides, n) }.to_vec()
        };
        (shape, strides)
    }

    /// The struct-module letter of the items ('B' when the exporter gives none).
    pub fn format_char(&self) -> u8 {
        let v = self.view();
        if v.format.is_null() {
            return b'B';
        }
        // SAFETY: a non-null format is a NUL-terminated string owned by the view.
        let f = unsafe { std::ffi::CStr::from_ptr(v.format) }.to_bytes();
        f.iter()
            .copied()
            .find(|c| c.is_ascii_alphabetic() || *c == b'?')
            .unwrap_or(b'B')
    }

    /// The rows of bytes the export covers (any item type): all of it when
    /// C-contiguous, else rows with gaps only between them.
    pub fn rows(&self) -> Result<RowSpan> {
        let (shape, strides) = self.dims();
        let view = StridedView {
            shape: &shape,
            strides: &strides,
            itemsize: self.itemsize(),
        };
        Ok(view.rows()?)
    }

    /// The export as an image of `format`: items must be 8- or 16-bit
    /// integers and the shape must be that image's (see the module docs).
    /// `what` names the argument in errors. Returns the layout and the bytes
    /// it spans from [`BufferExport::ptr`].
    pub fn image(
        &self,
        format: PixelFormat,
        expect: Expected,
        what: &str,
    ) -> Result<(FrameLayout, usize)> {
        let fc = self.format_char();
        if !matches!(fc, b'B' | b'b' | b'c' | b'H' | b'h') {
            return Err(Error::value(format!(
                "{what}: buffer items of format {:?} are not 8- or 16-bit integers \
                 (a {format} image is uint8{})",
                fc as char,
                if format.sample_bytes() == 2 {
                    " or uint16"
                } else {
                    ""
                }
            )));
        }
        let (shape, strides) = self.dims();
        let view = StridedView {
            shape: &shape,
            strides: &strides,
            itemsize: self.itemsize(),
        };
        FrameLayout::from_strides(&view, format, expect)
            .map_err(|e| Error::value(format!("{what}: {e}")))
    }
}

impl Drop for BufferExport {
    fn drop(&mut self) {
        let Some(mut view) = self.view.take() else {
            return;
        };
        // SAFETY: PyGILState_Check only reads this thread's state.
        if unsafe { ffi::PyGILState_Check() } == 1 {
            // SAFETY: the view was filled by a successful PyObject_GetBuffer,
            // is released exactly once, here, and this thread holds the GIL.
            unsafe { ffi::PyBuffer_Release(&mut *view) };
            lock(&SPARE).push(SendView(view));
        } else {
            lock(&FINISHED).push(SendView(view));
        }
    }
}

/// Pixels handed to framebus: a frame's lease, or a buffer export.
pub enum Pixels {
    Frame(Frame),
    Buffer(BufferExport),
}

impl Pixels {
    /// A `framebus.Frame` (a new lease on its slot; it must be writable when
    /// `writable`) or any other object's buffer export.
    pub fn from_py(obj: &Bound<'_, PyAny>, writable: bool) -> Result<Pixels> {
        if let Ok(f) = obj.cast::<PyFrame>() {
            let frame = f.get().frame()?;
            if writable && !frame.is_writable() {
                return Err(Error::value(
                    "a read-only Frame (received or shared) cannot be written; use \
                     frame.copy() for a writable one",
                ));
            }
            return Ok(Pixels::Frame(frame));
        }
        Ok(Pixels::Buffer(BufferExport::new(obj, writable)?))
    }

    /// (address, bytes) of the memory the pixels occupy.
    pub fn range(&self) -> (usize, usize) {
        match self {
            Pixels::Frame(f) => (f.as_ptr() as usize, f.byte_len()),
            Pixels::Buffer(b) => (b.ptr() as usize, b.len()),
        }
    }
}
