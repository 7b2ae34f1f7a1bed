//! `framebus.pipe`, `framebus.sync`, `framebus.close`, `framebus.pipe_stats`,
//! `framebus.VideoWriter`: bindings of `framebus-pipe`.
//!
//! A queued job holds its pixels through `buffer::Pixels` (a Frame's lease, or
//! a live buffer export parked for release with the GIL once written) — never
//! a bare pointer. Every wait (a full queue, `sync`, `close`, FFmpeg's exit)
//! goes through `wait::wait`: slices with the GIL released, Ctrl-C honoured.
//! The `VideoWriter` getters read the writer's shared status (atomics), never
//! the lock a blocked `write` holds.

// A timed-out submit hands the job back by value (`Rejected`), by design.
#![allow(clippy::result_large_err)]

use crate::args::{self, Int};
use crate::buffer::{release_finished, Pixels};
use crate::errors::{Error, Result};
use framebus_core::{Expected, PixelFormat};
use framebus_pipe::{
    PipeWriter, Region, Rejected, Source, VideoConfig, VideoStatus, VideoWriter, WaitError,
    WriterConfig, MAX_CHUNK, MAX_CRF, MAX_DEPTH, MAX_FPS, MAX_PIPE_SIZE, MAX_VIDEO_SIZE, MIN_CHUNK,
    MIN_FPS, MIN_PIPE_SIZE,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::ops::ControlFlow::{Break, Continue};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// One queued write: pixels and where their bytes are.
struct Job {
    pixels: Pixels,
    region: Region,
}

impl Job {
    fn new(pixels: Pixels) -> Result<Job> {
        let region = match &pixels {
            Pixels::Frame(f) => f.region(),
            Pixels::Buffer(b) => {
                let r = b.rows()?;
                Region {
                    ptr: b.ptr(),
                    row_bytes: r.row_bytes,
                    stride: r.stride,
                    rows: r.rows,
                }
            }
        };
        Ok(Job { pixels, region })
    }
}

// SAFETY: `region.ptr` is only read by the writer thread through the kernel
// (write/vmsplice), and `pixels` is Send (a lease, or a buffer export whose
// release happens with the GIL); nothing else in a Job is thread-bound.
unsafe impl Send for Job {}
// SAFETY: shared access only reads `region` (plain values) and the pixels'
// immutable metadata.
unsafe impl Sync for Job {}

// SAFETY: `region` lies inside the memory `pixels` keeps alive and mapped at
// the same address (a Frame's lease, or a buffer export that pins the
// exporter's memory until released), and never changes after `new`.
unsafe impl Source for Job {
    fn region(&self) -> Region {
        self.region
    }
}

/// An fd from an int or an object with `fileno()`.
fn fd_of(fd: &Bound<'_, PyAny>) -> Result<i32> {
    let n: Int = match fd.extract::<Int>() {
        Ok(n) => n,
        Err(_) => match fd.call_method0("fileno") {
            Ok(n) => n.extract()?,
            Err(_) => {
                return Err(Error::type_(format!(
                    "fd must be an int or have fileno(), got {}",
                    fd.get_type().name()?
                )))
            }
        },
    };
    Ok(args::count("fd", n, 0, i32::MAX as usize)? as i32)
}

/// `$name` as a byte size: 0 (the default) or `min..=max`.
fn env_size(name: &str, min: usize, max: usize) -> Result<Option<usize>> {
    match args::env_count(name, 0, max)? {
        Some(v) if v != 0 && v < min => Err(Error::value(format!(
            "invalid environment variable {name}={v} (must be 0 or {min}..={max})"
        ))),
        v => Ok(v),
    }
}

/// The process-wide writer behind `framebus.pipe`. Its settings come from
/// FRAMEBUS_PIPE_DEPTH, FRAMEBUS_PIPE_CHUNK, FRAMEBUS_PIPE_SIZE and
/// FRAMEBUS_PIPE_SPLICE, read at first use; a bad value fails that call (and
/// the next ones) naming the variable.
///
/// One writer per fork generation: a forked child does not have the parent's
/// writer threads, so its first `pipe` starts a writer of its own (the
/// parent's, with whatever it had queued, is abandoned in the child — leaked,
/// never written there, never touched again).
fn writer() -> Result<&'static PipeWriter<Job>> {
    static W: Mutex<Option<(u64, &'static PipeWriter<Job>)>> = Mutex::new(None);
    let generation = framebus_core::fork::generation();
    let mut current = W.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((g, w)) = *current {
        if g == generation {
            return Ok(w);
        }
    }
    let d = WriterConfig::default();
    let cfg = WriterConfig {
        depth: args::env_count("FRAMEBUS_PIPE_DEPTH", 1, MAX_DEPTH)?.unwrap_or(d.depth),
        chunk: env_size("FRAMEBUS_PIPE_CHUNK", MIN_CHUNK, MAX_CHUNK)?.unwrap_or(d.chunk),
        pipe_size: env_size("FRAMEBUS_PIPE_SIZE", MIN_PIPE_SIZE, MAX_PIPE_SIZE)?
            .unwrap_or(d.pipe_size),
        splice: args::env_count("FRAMEBUS_PIPE_SPLICE", 0, 1)?.map_or(d.splice, |v| v == 1),
    };
    let w: &'static PipeWriter<Job> = Box::leak(Box::new(PipeWriter::new(cfg)?));
    *current = Some((generation, w));
    Ok(w)
}

/// Finish a call: release finished exports, then pass the outcome on.
fn finish<T>(py: Python<'_>, r: Result<T>) -> Result<T> {
    release_finished(py);
    r
}

/// Wait, in Ctrl-C-interruptible slices, for a `*_timeout` call of the pipe
/// crate to finish; `None` waits as long as it takes.
fn wait_pipe(
    py: Python<'_>,
    timeout: Option<Duration>,
    what: &str,
    mut step: impl FnMut(Duration) -> std::result::Result<(), WaitError> + Send,
) -> Result<()> {
    crate::wait::wait(
        py,
        timeout,
        |slice| match step(slice) {
            Ok(()) => Ok(Break(())),
            Err(WaitError::Timeout) => Ok(Continue(())),
            Err(WaitError::Failed(e)) => Err(e),
        },
        |waited, ()| crate::wait::timed_out(what, waited),
    )
}

/// Hand `job` over with `submit(job, slice)` in slices (the callee hands the
/// job back when its slice ran out) until it is queued.
fn submit_in_slices(
    py: Python<'_>,
    job: Job,
    mut submit: impl FnMut(Job, Duration) -> std::result::Result<(), Rejected<Job, WaitError>> + Send,
) -> Result<()> {
    let mut job = Some(job);
    crate::wait::wait(
        py,
        None,
        |slice| {
            let Some(j) = job.take() else {
                return Ok(Break(()));
            };
            match submit(j, slice) {
                Ok(()) => Ok(Break(())),
                Err(Rejected {
                    error: WaitError::Timeout,
                    owner,
                }) => {
                    job = Some(owner);
                    Ok(Continue(()))
                }
                Err(Rejected {
                    error: WaitError::Failed(e),
                    ..
                }) => Err(e),
            }
        },
        |_, ()| Error::value("internal: a wait without a timeout expired"),
    )
}

/// Queue `obj`'s bytes to be written to `fd` by that fd's writer thread.
///
/// `obj` is a framebus.Frame or any buffer exporter; it is kept alive (and its
/// buffer exported) until written. Blocks (Ctrl-C honoured) while the fd's
/// queue is full. Raises the fd's stored write error (e.g. BrokenPipeError)
/// instead of queueing.
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
) -> Result<()> {
    release_finished(py);
    let fd = fd_of(fd)?;
    let w = writer()?;
    let job = Job::new(Pixels::from_py(obj, false)?)?;
    let key = obj.as_ptr() as u64;
    let splice = splice.unwrap_or(w.config().splice);
    let r = submit_in_slices(py, job, |j, slice| {
        w.submit_timeout(fd, j, key, splice, slice).map(|_| ())
    });
    finish(py, r)
}

/// Wait for queued writes: of `obj` (on any fd), of `fd`, or of everything —
/// up to `timeout` seconds (None = as long as it takes; Ctrl-C honoured).
/// Raises the stored write error of the fds waited on.
#[pyfunction]
#[pyo3(signature = (obj=None, fd=None, timeout=None))]
fn sync(
    py: Python<'_>,
    obj: Option<&Bound<'_, PyAny>>,
    fd: Option<&Bound<'_, PyAny>>,
    timeout: Option<f64>,
) -> Result<()> {
    release_finished(py);
    let fd = fd.map(fd_of).transpose()?;
    let timeout = args::timeout("timeout", timeout)?;
    let key = obj.map(|o| o.as_ptr() as u64);
    let w = writer()?;
    let r = wait_pipe(py, timeout, "queued writes", |slice| match (key, fd) {
        (None, None) => w.sync_all_timeout(slice),
        (k, f) => {
            if let Some(k) = k {
                w.sync_key_timeout(k, slice)?;
            }
            f.map_or(Ok(()), |f| w.sync_fd_timeout(f, slice))
        }
    });
    finish(py, r)
}

/// Flush `fd`'s queue and stop its writer thread (the fd itself stays open).
/// Raises the fd's write error if it was not raised before.
#[pyfunction]
fn close(py: Python<'_>, fd: &Bound<'_, PyAny>) -> Result<()> {
    release_finished(py);
    let fd = fd_of(fd)?;
    let w = writer()?;
    let r = wait_pipe(py, None, "the writer to close", |slice| {
        w.close_timeout(fd, slice)
    });
    finish(py, r)
}

/// Counters of `fd`'s writer, or None if the fd has no writer thread.
#[pyfunction]
fn pipe_stats<'py>(py: Python<'py>, fd: &Bound<'py, PyAny>) -> Result<Option<Bound<'py, PyDict>>> {
    let fd = fd_of(fd)?;
    let Some(s) = writer()?.fd_stats(fd) else {
        return Ok(None);
    };
    let d = PyDict::new(py);
    d.set_item("submitted", s.submitted)?;
    d.set_item("done", s.done)?;
    d.set_item("queued", s.queued)?;
    d.set_item("waiting", s.waiting)?;
    d.set_item("bytes_written", s.bytes_written)?;
    d.set_item("pipe_size", s.pipe_size)?;
    d.set_item("failed", s.failed)?;
    d.set_item("closing", s.closing)?;
    Ok(Some(d))
}

/// Frames → FFmpeg → a video file (or a URL), written by a background thread,
/// zero-copy.
#[pyclass(name = "VideoWriter", module = "framebus", frozen)]
pub struct PyVideoWriter {
    inner: Mutex<VideoWriter<Job>>,
    /// Read by the getters without taking `inner`.
    status: Arc<VideoStatus>,
    command: Vec<String>,
    format: PixelFormat,
    width: usize,
    height: usize,
    fps: f64,
    path: Option<PathBuf>,
    url: Option<String>,
}

impl PyVideoWriter {
    fn lock(&self) -> MutexGuard<'_, VideoWriter<Job>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `extra_args`: a sequence of strings (a lone string is refused: it would be
/// split into characters, or be one argument by accident).
fn extra_args(v: Option<&Bound<'_, PyAny>>) -> Result<Vec<String>> {
    let Some(v) = v else { return Ok(Vec::new()) };
    if v.is_instance_of::<PyString>() {
        return Err(Error::type_(format!(
            "extra_args must be a list of strings, not a str (did you mean [{}]?)",
            v.repr()?
        )));
    }
    v.extract().map_err(|_| {
        Error::type_(format!(
            "extra_args must be a list of strings, got {}",
            v.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })
}

#[pymethods]
impl PyVideoWriter {
    /// Start FFmpeg writing `width`×`height` `format` frames at `fps` to the
    /// file `path` (always a file, even if it starts with '-' or contains
    /// ':'), or to `url=` (an FFmpeg output URL such as rtmp://…, with
    /// `path=None`).
    #[new]
    #[pyo3(
        signature = (path, width, height, fps, format="BGRA", codec="libx264", preset=None, crf=None, pix_fmt=None, extra_args=None, ffmpeg=None, queue_depth=Int(8), splice=true, *, url=None),
        text_signature = "(path, width, height, fps, format='BGRA', codec='libx264', preset=None, crf=None, pix_fmt=None, extra_args=None, ffmpeg=None, queue_depth=8, splice=True, *, url=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        width: Int,
        height: Int,
        fps: f64,
        format: &str,
        codec: &str,
        preset: Option<String>,
        crf: Option<Int>,
        pix_fmt: Option<String>,
        extra_args: Option<&Bound<'_, PyAny>>,
        ffmpeg: Option<PathBuf>,
        queue_depth: Int,
        splice: bool,
        url: Option<String>,
    ) -> Result<Self> {
        let format: PixelFormat = format.parse()?;
        let width = args::size("width", width, MAX_VIDEO_SIZE)?;
        let height = args::size("height", height, MAX_VIDEO_SIZE)?;
        let fps = args::float_in("fps", fps, MIN_FPS, MAX_FPS)?;
        let mut cfg = match (&path, &url) {
            (Some(p), None) => VideoConfig::new(p.clone(), width, height, fps, format),
            (None, Some(u)) => VideoConfig::url(u.clone(), width, height, fps, format),
            _ => {
                return Err(Error::value(
                    "give either a file path or url=, not both (and not neither)",
                ))
            }
        };
        cfg.codec = codec.to_string();
        cfg.preset = preset;
        cfg.crf = args::opt_count("crf", crf, 0, MAX_CRF as usize)?.map(|c| c as u32);
        cfg.pix_fmt = pix_fmt;
        cfg.extra_args = self::extra_args(extra_args)?;
        cfg.ffmpeg = ffmpeg;
        cfg.queue_depth = args::count("queue_depth", queue_depth, 1, MAX_DEPTH)?;
        cfg.splice = splice;
        let vw = py.detach(|| VideoWriter::<Job>::open(cfg))?;
        let command = std::iter::once(vw.program().display().to_string())
            .chain(vw.config().args())
            .collect();
        Ok(PyVideoWriter {
            status: vw.status(),
            command,
            inner: Mutex::new(vw),
            format,
            width,
            height,
            fps,
            path,
            url,
        })
    }

    /// Queue one frame (a framebus.Frame, or an array of this writer's image:
    /// shape (h, w, c) of uint8/uint16, or the exact bytes flat); checks size,
    /// format and strides, then hands it to the writer thread without a copy.
    /// Waits (Ctrl-C honoured) while the queue is full.
    fn write(&self, py: Python<'_>, frame: &Bound<'_, PyAny>) -> Result<()> {
        release_finished(py);
        let pixels = Pixels::from_py(frame, false)?;
        if let Pixels::Buffer(b) = &pixels {
            let expect = Expected {
                width: Some(self.width),
                height: Some(self.height),
                stride: None,
            };
            b.image(self.format, expect, "frame")?;
        }
        let job = Job::new(pixels)?;
        // The writer's lock is only ever waited for with the GIL released.
        py.detach(|| {
            let w = self.lock();
            if let Pixels::Frame(f) = &job.pixels {
                w.check_layout(f.layout())?;
            }
            w.check_region(&job)
        })?;
        let r = submit_in_slices(py, job, |j, slice| {
            self.lock().write_owner_timeout(j, slice)
        });
        finish(py, r)
    }

    /// Wait (Ctrl-C honoured) until every queued frame reached FFmpeg.
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> Result<()> {
        let timeout = args::timeout("timeout", timeout)?;
        let r = wait_pipe(py, timeout, "FFmpeg to take the queued frames", |slice| {
            self.lock().flush_timeout(slice)
        });
        finish(py, r)
    }

    /// Flush, close FFmpeg's stdin and wait for it (Ctrl-C honoured); raises
    /// FFmpegError with the tail of its stderr if it failed. Idempotent.
    fn close(&self, py: Python<'_>) -> Result<()> {
        let r = wait_pipe(py, None, "FFmpeg to finish", |slice| {
            self.lock().close_timeout(slice)
        });
        finish(py, r)
    }

    /// Kill FFmpeg now (the output file is left incomplete).
    fn abort(&self, py: Python<'_>) {
        py.detach(|| self.lock().kill());
        // After SIGKILL the rest of the close cannot block for long; its error
        // (FFmpeg was killed) is the expected outcome of an abort.
        let _ = wait_pipe(py, None, "FFmpeg to exit", |slice| {
            self.lock().close_timeout(slice)
        });
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
    ) -> Result<bool> {
        let r = self.close(py);
        if exc_type.is_none() {
            r?;
        }
        Ok(false)
    }

    /// Frames queued so far.
    #[getter]
    fn frames_written(&self) -> u64 {
        self.status.frames_written()
    }

    /// The FFmpeg command line (program and arguments).
    #[getter]
    fn command(&self) -> Vec<String> {
        self.command.clone()
    }

    /// FFmpeg's process id, or None once it has exited.
    #[getter]
    fn pid(&self) -> Option<u32> {
        self.status.pid()
    }

    /// True once a close (or abort) began: writes are refused.
    #[getter]
    fn closed(&self) -> bool {
        self.status.closed()
    }

    /// The output file (None when writing to a URL).
    #[getter]
    fn path(&self) -> Option<PathBuf> {
        self.path.clone()
    }

    /// The output URL (None when writing to a file).
    #[getter]
    fn url(&self) -> Option<String> {
        self.url.clone()
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
        let target = match (&self.path, &self.url) {
            (Some(p), _) => format!("{:?}", p.display().to_string()),
            (None, Some(u)) => format!("url={u:?}"),
            (None, None) => String::new(),
        };
        format!(
            "VideoWriter({target}, {}x{} {} @ {} fps, {} frames)",
            self.width,
            self.height,
            self.format,
            self.fps,
            self.status.frames_written()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pipe, m)?)?;
    m.add_function(wrap_pyfunction!(sync, m)?)?;
    m.add_function(wrap_pyfunction!(close, m)?)?;
    m.add_function(wrap_pyfunction!(pipe_stats, m)?)?;
    m.add_class::<PyVideoWriter>()?;
    Ok(())
}
