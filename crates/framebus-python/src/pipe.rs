//! `framebus.pipe`, `framebus.sync`, `framebus.close`, `framebus.VideoWriter`:
//! bindings of `framebus-pipe`.
//!
//! What a queued job holds (never a bare pointer):
//! * a `framebus.Frame` → a clone of its `Lease` (no GIL needed to drop it);
//! * any other buffer exporter (NumPy, bytes, bytearray, memoryview, ModernGL
//!   buffer) → a live `Py_buffer` export, so the exporter cannot free, resize
//!   or unmap the memory until the bytes are written.
//!
//! Releasing a `Py_buffer` needs the GIL, and the writer threads never take
//! it (so they can never deadlock with a thread that holds the GIL, nor touch
//! a finalizing interpreter). A finished export is parked in `FINISHED` by the
//! worker instead, and released — with the GIL — at the start and end of every
//! `pipe`/`sync`/`close`/`VideoWriter` call. `sync` returns only after the
//! exports it waited for are released. The boxed `Py_buffer`s are recycled
//! (`SPARE`), so piping allocates nothing per frame once warm.
//!
//! Waiting (a full queue, `sync`, `close`) always happens with the GIL released.

use crate::errors::FramebusError;
use crate::frame::PyFrame;
use framebus_core::{Frame, PixelFormat};
use framebus_pipe::{
    PipeError, PipeWriter, Region, Rejected, Source, VideoConfig, VideoWriter, WriterConfig,
};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

pyo3::create_exception!(
    framebus,
    FFmpegError,
    FramebusError,
    "FFmpeg failed; the message (and the `stderr` attribute) holds the tail of its stderr."
);

/// A boxed `Py_buffer` (boxed so its address never changes while exported).
struct View(Box<ffi::Py_buffer>);

// SAFETY: a View is moved between threads but only dereferenced with the GIL
// held (export, release); the writer threads only pass `buf` to the kernel.
unsafe impl Send for View {}

/// Exports whose bytes were written, waiting for the GIL to be released.
static FINISHED: Mutex<Vec<View>> = Mutex::new(Vec::new());
/// Released `Py_buffer` boxes, reused for the next export.
static SPARE: Mutex<Vec<View>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Release every finished export. Pops one at a time without holding the lock
/// while releasing: a release may run Python code (`__releasebuffer__`, `__del__`)
/// that calls back into framebus.
fn release_finished(_py: Python<'_>) {
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

/// A live buffer export. Dropping it (on any thread) parks the view in `FINISHED`.
struct Export {
    view: Option<View>,
    region: Region,
}

// SAFETY: the region's pointer is only dereferenced by the kernel (`write`);
// the View is Send (see above); the export keeps the exporter alive
// (`view.obj` is a strong reference).
unsafe impl Send for Export {}

impl Drop for Export {
    fn drop(&mut self) {
        if let Some(v) = self.view.take() {
            lock(&FINISHED).push(v);
        }
    }
}

/// One queued write: a frame's lease or a buffer export.
enum PyJob {
    Frame(Frame),
    Buffer(Export),
}

// SAFETY: Frame: see framebus_pipe's impl for Frame. Buffer: a held Py_buffer
// export keeps `buf` valid for `len` bytes until PyBuffer_Release, which only
// happens after the job (and so the Export) was dropped.
unsafe impl Source for PyJob {
    fn region(&self) -> Region {
        match self {
            PyJob::Frame(f) => f.region(),
            PyJob::Buffer(e) => e.region,
        }
    }
}

/// The C-order bytes of a buffer: flat if C-contiguous, else rows when only the
/// first dimension has a gap (a cropped or padded image), else `ValueError`.
fn region_of(v: &ffi::Py_buffer) -> PyResult<Region> {
    let base = v.buf as *const u8;
    let len = v.len.max(0) as usize;
    let contiguous = v.ndim == 0 || v.strides.is_null() || {
        // SAFETY: `v` is a filled export; PyBuffer_IsContiguous only reads it.
        unsafe { ffi::PyBuffer_IsContiguous(v, b'C' as _) == 1 }
    };
    if contiguous {
        return Ok(Region::flat(base, len));
    }
    let nd = v.ndim as usize;
    // SAFETY: with PyBUF_STRIDES the exporter fills `shape` and `strides` with
    // `ndim` entries each, valid while the export lives.
    let (shape, strides) = unsafe {
        (
            std::slice::from_raw_parts(v.shape, nd),
            std::slice::from_raw_parts(v.strides, nd),
        )
    };
    let item = v.itemsize.max(1);
    let mut expect = item;
    let mut inner_ok = true;
    for i in (1..nd).rev() {
        if shape[i] > 1 && strides[i] != expect {
            inner_ok = false;
        }
        expect *= shape[i];
    }
    let row_bytes = expect.max(0) as usize;
    if nd >= 2 && inner_ok && strides[0] >= expect && expect > 0 {
        return Ok(Region {
            ptr: base,
            row_bytes,
            stride: strides[0] as usize,
            rows: shape[0].max(0) as usize,
        });
    }
    Err(PyValueError::new_err(format!(
        "cannot pipe a non-contiguous buffer (shape {shape:?}, strides {strides:?}, itemsize {item}): \
         only the first dimension may have gaps; pass numpy.ascontiguousarray(obj)"
    )))
}

/// Export `obj`'s buffer (read-only, with strides) and describe its bytes.
/// Up to 4 dimensions of an export's shape (more only ever fail the checks).
type Shape = ([isize; 4], usize);

fn export(obj: &Bound<'_, PyAny>) -> PyResult<(Export, Shape, isize)> {
    let mut view = lock(&SPARE).pop().unwrap_or_else(|| {
        // SAFETY: Py_buffer is plain data (pointers and integers); all-zero is valid.
        View(Box::new(unsafe { std::mem::zeroed::<ffi::Py_buffer>() }))
    });
    // SAFETY: `obj` is a live object (we hold the GIL); `view` is ours to fill.
    let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view.0, ffi::PyBUF_STRIDES) };
    if rc != 0 {
        lock(&SPARE).push(view);
        let cause = PyErr::take(obj.py());
        let err = PyValueError::new_err(format!(
            "cannot pipe a {} object: it does not export a readable buffer{}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default(),
            cause.map(|c| format!(" ({c})")).unwrap_or_default()
        ));
        return Err(err);
    }
    let v = &*view.0;
    let mut shape: Shape = ([0; 4], 1);
    if v.ndim > 0 && !v.shape.is_null() {
        // SAFETY: `shape` has `ndim` entries while the export lives.
        let s = unsafe { std::slice::from_raw_parts(v.shape, v.ndim as usize) };
        shape.1 = s.len();
        for (d, x) in shape.0.iter_mut().zip(s) {
            *d = *x;
        }
    } else {
        shape.0[0] = v.len;
    }
    let itemsize = v.itemsize;
    match region_of(v) {
        Ok(region) => Ok((
            Export {
                view: Some(view),
                region,
            },
            shape,
            itemsize,
        )),
        Err(e) => {
            // SAFETY: the export succeeded above and is released once, with the GIL.
            unsafe { ffi::PyBuffer_Release(&mut *view.0) };
            lock(&SPARE).push(view);
            Err(e)
        }
    }
}

/// A job for `obj`: a Frame's lease, or a buffer export.
fn job_of(obj: &Bound<'_, PyAny>) -> PyResult<PyJob> {
    if let Ok(f) = obj.cast::<PyFrame>() {
        return Ok(PyJob::Frame(f.get().frame()?));
    }
    Ok(PyJob::Buffer(export(obj)?.0))
}

/// An fd from an int or an object with `fileno()`.
fn fd_of(fd: &Bound<'_, PyAny>) -> PyResult<i32> {
    let n: i64 = match fd.extract::<i64>() {
        Ok(n) => n,
        Err(_) => match fd.call_method0("fileno") {
            Ok(n) => n.extract()?,
            Err(_) => {
                return Err(PyValueError::new_err(format!(
                    "fd must be an int or have fileno(), got {}",
                    fd.get_type().name()?
                )))
            }
        },
    };
    i32::try_from(n)
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| PyValueError::new_err(format!("invalid fd: {n}")))
}

/// Map a pipe error to its exception: write failures → the `OSError` subclass of
/// their errno (`BrokenPipeError`, …), bad arguments → `ValueError`, FFmpeg
/// failures → `framebus.FFmpegError` with a `stderr` attribute.
fn to_pyerr(py: Python<'_>, e: PipeError) -> PyErr {
    let msg = e.to_string();
    match e {
        PipeError::Write(w) => PyOSError::new_err((w.errno, msg)),
        PipeError::InvalidArgument { .. }
        | PipeError::FrameMismatch { .. }
        | PipeError::Layout(_)
        | PipeError::WriterClosed => PyValueError::new_err(msg),
        PipeError::Closing(_) => FramebusError::new_err(msg),
        PipeError::FfmpegNotFound(_) => PyFileNotFoundError::new_err(msg),
        PipeError::Ffmpeg { stderr_tail, .. } => {
            let err = FFmpegError::new_err(msg);
            let _ = err.value(py).setattr("stderr", stderr_tail);
            err
        }
        PipeError::Spawn { source, .. }
        | PipeError::FfmpegSpawn { source, .. }
        | PipeError::Os { source, .. } => match source.raw_os_error() {
            Some(code) => PyOSError::new_err((code, msg)),
            None => PyOSError::new_err(msg),
        },
    }
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// The process-wide writer behind `framebus.pipe`. Its settings can be tuned
/// with FRAMEBUS_PIPE_DEPTH, FRAMEBUS_PIPE_CHUNK, FRAMEBUS_PIPE_SIZE (read once).
fn writer() -> PyResult<&'static PipeWriter<PyJob>> {
    static W: OnceLock<PipeWriter<PyJob>> = OnceLock::new();
    if let Some(w) = W.get() {
        return Ok(w);
    }
    let d = WriterConfig::default();
    let cfg = WriterConfig {
        depth: env_usize("FRAMEBUS_PIPE_DEPTH").unwrap_or(d.depth),
        chunk: env_usize("FRAMEBUS_PIPE_CHUNK").unwrap_or(d.chunk),
        pipe_size: env_usize("FRAMEBUS_PIPE_SIZE").unwrap_or(d.pipe_size),
        splice: env_usize("FRAMEBUS_PIPE_SPLICE").is_some_and(|v| v != 0),
    };
    let w = PipeWriter::new(cfg).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(W.get_or_init(|| w))
}

/// Finish a call: release finished exports, then map the outcome.
fn finish<T>(py: Python<'_>, r: Result<T, PipeError>) -> PyResult<T> {
    release_finished(py);
    r.map_err(|e| to_pyerr(py, e))
}

/// Queue `obj`'s bytes to be written to `fd` by that fd's writer thread.
///
/// `obj` is a framebus.Frame or any buffer exporter; it is kept alive (and its
/// buffer exported) until written. Blocks while the fd's queue is full. Raises
/// the fd's stored write error (e.g. BrokenPipeError) instead of queueing.
///
/// `splice=True` moves the pages into an anonymous pipe with vmsplice instead of
/// copying them; the job then counts as done (for `sync`) only when the reader
/// has read it. Only for readers that copy what they read (FFmpeg, Python, cat),
/// not for ones that splice it onward. Default: $FRAMEBUS_PIPE_SPLICE, else off.
#[pyfunction]
#[pyo3(signature = (obj, fd, *, splice=None))]
fn pipe(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    fd: &Bound<'_, PyAny>,
    splice: Option<bool>,
) -> PyResult<()> {
    release_finished(py);
    let fd = fd_of(fd)?;
    let job = job_of(obj)?;
    let key = obj.as_ptr() as u64;
    let w = writer()?;
    let splice = splice.unwrap_or(w.config().splice);
    let r = py.detach(|| {
        w.submit_with(fd, job, key, splice)
            .map(|_| ())
            .map_err(|Rejected { error, owner }| {
                drop(owner);
                error
            })
    });
    finish(py, r)
}

/// Wait for queued writes: of `obj` (on any fd), of `fd`, or of everything.
/// Raises the stored write error of the fds waited on.
#[pyfunction]
#[pyo3(signature = (obj=None, fd=None))]
fn sync(
    py: Python<'_>,
    obj: Option<&Bound<'_, PyAny>>,
    fd: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    release_finished(py);
    let fd = fd.map(fd_of).transpose()?;
    let key = obj.map(|o| o.as_ptr() as u64);
    let w = writer()?;
    let r = py.detach(|| match (key, fd) {
        (None, None) => w.sync_all(),
        (k, f) => {
            let a = k.map_or(Ok(()), |k| w.sync_key(k));
            let b = f.map_or(Ok(()), |f| w.sync_fd(f));
            a.and(b)
        }
    });
    finish(py, r)
}

/// Flush `fd`'s queue and stop its writer thread (the fd itself stays open).
/// Raises the fd's write error if it was not raised before.
#[pyfunction]
fn close(py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<()> {
    release_finished(py);
    let fd = fd_of(fd)?;
    let w = writer()?;
    let r = py.detach(|| w.close(fd));
    finish(py, r)
}

/// Counters of `fd`'s writer, or None if the fd has no writer thread.
#[pyfunction]
fn pipe_stats<'py>(
    py: Python<'py>,
    fd: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let fd = fd_of(fd)?;
    let Some(s) = writer()?.fd_stats(fd) else {
        return Ok(None);
    };
    let d = PyDict::new(py);
    d.set_item("submitted", s.submitted)?;
    d.set_item("done", s.done)?;
    d.set_item("queued", s.queued)?;
    d.set_item("bytes_written", s.bytes_written)?;
    d.set_item("pipe_size", s.pipe_size)?;
    d.set_item("failed", s.failed)?;
    Ok(Some(d))
}

/// Frames → FFmpeg → a video file, written by a background thread, zero-copy.
#[pyclass(name = "VideoWriter", module = "framebus", frozen)]
pub struct PyVideoWriter {
    inner: Mutex<VideoWriter<PyJob>>,
    args: Vec<String>,
    program: String,
    format: PixelFormat,
    width: usize,
    height: usize,
    fps: f64,
    path: PathBuf,
}

impl PyVideoWriter {
    fn lock(&self) -> MutexGuard<'_, VideoWriter<PyJob>> {
        lock(&self.inner)
    }

    /// Check an exported array's shape and item size against the frame format,
    /// naming the mismatch (the byte-level check follows in `check_region`).
    fn check_array(&self, shape: &[isize], itemsize: isize, ndim: usize) -> PyResult<()> {
        let f = self.format;
        if ndim > 4 {
            return Err(PyValueError::new_err(format!(
                "a {ndim}-dimensional array cannot be a {f} frame"
            )));
        }
        if shape.len() == 1 {
            return Ok(()); // flat bytes: the byte-size check names a mismatch
        }
        let expect: Vec<isize> = if f.is_planar() {
            vec![(self.height / 2 * 3) as isize, self.width as isize]
        } else if f.channels() == 1 {
            vec![self.height as isize, self.width as isize]
        } else {
            vec![
                self.height as isize,
                self.width as isize,
                f.channels() as isize,
            ]
        };
        let dtype = if f.sample_bytes() == 2 {
            "uint16"
        } else {
            "uint8"
        };
        if shape != expect.as_slice() {
            return Err(PyValueError::new_err(format!(
                "array shape {} does not match the VideoWriter's {}x{} {} frames: expected shape {} of {dtype}",
                py_tuple(shape),
                self.width,
                self.height,
                f,
                py_tuple(&expect)
            )));
        }
        if itemsize != f.sample_bytes() as isize {
            return Err(PyValueError::new_err(format!(
                "array item size {itemsize} does not match {f} frames: expected {dtype} ({} byte samples)",
                f.sample_bytes()
            )));
        }
        Ok(())
    }
}

fn py_tuple(v: &[isize]) -> String {
    match v {
        [x] => format!("({x},)"),
        _ => format!(
            "({})",
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[pymethods]
impl PyVideoWriter {
    #[new]
    #[pyo3(signature = (path, width, height, fps, format="BGRA", codec="libx264", preset=None, crf=None, pix_fmt=None, extra_args=None, ffmpeg=None, queue_depth=8, splice=true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        width: usize,
        height: usize,
        fps: f64,
        format: &str,
        codec: &str,
        preset: Option<String>,
        crf: Option<u32>,
        pix_fmt: Option<String>,
        extra_args: Option<Vec<String>>,
        ffmpeg: Option<PathBuf>,
        queue_depth: usize,
        splice: bool,
    ) -> PyResult<Self> {
        let format: PixelFormat = format.parse().map_err(crate::errors::to_pyerr)?;
        let mut cfg = VideoConfig::new(path.clone(), width, height, fps, format);
        cfg.codec = codec.to_string();
        cfg.preset = preset;
        cfg.crf = crf;
        cfg.pix_fmt = pix_fmt;
        cfg.extra_args = extra_args.unwrap_or_default();
        cfg.ffmpeg = ffmpeg;
        cfg.queue_depth = queue_depth;
        cfg.splice = splice;
        let args = cfg.args();
        let vw = py
            .detach(|| VideoWriter::<PyJob>::open(cfg))
            .map_err(|e| to_pyerr(py, e))?;
        Ok(PyVideoWriter {
            program: vw.program().display().to_string(),
            inner: Mutex::new(vw),
            args,
            format,
            width,
            height,
            fps,
            path,
        })
    }

    /// Queue one frame (a framebus.Frame or an array of shape (h, w, c)); checks
    /// size, format and strides, then hands it to the writer thread without a copy.
    fn write(&self, py: Python<'_>, frame: &Bound<'_, PyAny>) -> PyResult<()> {
        release_finished(py);
        let job = if let Ok(f) = frame.cast::<PyFrame>() {
            let f = f.get().frame()?;
            self.lock()
                .check_layout(f.layout())
                .map_err(|e| to_pyerr(py, e))?;
            PyJob::Frame(f)
        } else {
            let (export, shape, itemsize) = export(frame)?;
            let dims = &shape.0[..shape.1.min(4)];
            let dims = if shape.1 > 4 { &shape.0[..0] } else { dims };
            if let Err(e) = self.check_array(dims, itemsize, shape.1) {
                drop(export);
                release_finished(py);
                return Err(e);
            }
            PyJob::Buffer(export)
        };
        let r = py.detach(|| {
            self.lock()
                .write_owner(job)
                .map_err(|Rejected { error, owner }| {
                    drop(owner);
                    error
                })
        });
        finish(py, r)
    }

    /// Wait until every queued frame reached FFmpeg.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let r = py.detach(|| self.lock().flush());
        finish(py, r)
    }

    /// Flush, close FFmpeg's stdin and wait for it; raises FFmpegError with the
    /// tail of its stderr if it failed. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let r = py.detach(|| self.lock().close());
        finish(py, r)
    }

    /// Kill FFmpeg now (the output file is left incomplete).
    fn abort(&self, py: Python<'_>) {
        py.detach(|| self.lock().abort());
        release_finished(py);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Close; if the block raised, its exception wins over a close error.
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let r = self.close(py);
        if exc_type.is_none() {
            r?;
        }
        Ok(false)
    }

    /// Frames queued so far.
    #[getter]
    fn frames_written(&self) -> u64 {
        self.lock().frames_written()
    }

    /// The FFmpeg command line (program and arguments).
    #[getter]
    fn command(&self) -> Vec<String> {
        std::iter::once(self.program.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }

    /// FFmpeg's process id, or None once closed.
    #[getter]
    fn pid(&self) -> Option<u32> {
        self.lock().pid()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.lock().pid().is_none()
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    #[getter]
    fn width(&self) -> usize {
        self.width
    }

    #[getter]
    fn height(&self) -> usize {
        self.height
    }

    #[getter]
    fn fps(&self) -> f64 {
        self.fps
    }

    #[getter]
    fn format(&self) -> &'static str {
        self.format.name()
    }

    fn __repr__(&self) -> String {
        format!(
            "VideoWriter({:?}, {}x{} {} @ {} fps, {} frames)",
            self.path.display().to_string(),
            self.width,
            self.height,
            self.format,
            self.fps,
            self.frames_written()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pipe, m)?)?;
    m.add_function(wrap_pyfunction!(sync, m)?)?;
    m.add_function(wrap_pyfunction!(close, m)?)?;
    m.add_function(wrap_pyfunction!(pipe_stats, m)?)?;
    m.add_class::<PyVideoWriter>()?;
    m.add("FFmpegError", m.py().get_type::<FFmpegError>())?;
    Ok(())
}
