//! Python face of framebus-kernels: `Frame.convert/resize/to_tensor` and the
//! module functions `convert`, `resize`, `to_tensor`, `simd_levels`, `simd_level`.
//!
//! Sources are a `framebus.Frame` or any buffer exporter whose shape is the
//! image (`buffer::Pixels`; NumPy arrays with padded rows are fine, a pixel
//! step is not). Results go into `out` — a writable Frame or buffer that must be
//! exactly the image asked for — or into a new Frame from the source frame's
//! pool (module functions: `pool=` or the default pool). Every kernel runs
//! with the GIL released.

use crate::args::{self, Int};
use crate::buffer::{BufferExport, Pixels};
use crate::errors::{Error, Result};
use crate::frame::PyFrame;
use crate::pool::{default_pool, parse_format, PyFramePool};
use crate::wait;
use framebus_core::{Expected, Frame, FrameLayout, FramePool, PixelFormat};
use framebus_kernels::{
    self as k, needed_bytes, ImageMut, ImageRef, Method, Options, Simd, TensorSpec,
};
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// A source image: a frame (its lease kept alive) or a buffer export.
struct Src {
    pixels: Pixels,
    layout: FrameLayout,
    /// Bytes read from the start address.
    span: usize,
}

impl Src {
    /// `obj` as an image: a Frame (whose format must equal `fmt` when given) or
    /// a buffer of `fmt` pixels whose shape must agree with `expect`.
    fn new(obj: &Bound<'_, PyAny>, fmt: Option<&str>, expect: Expected) -> Result<Src> {
        let fmt = fmt.map(parse_format).transpose()?;
        match Pixels::from_py(obj, false)? {
            Pixels::Frame(frame) => {
                if let Some(fmt) = fmt.filter(|f| *f != frame.format()) {
                    return Err(Error::value(format!(
                        "src_format={fmt} does not match the frame's format {}",
                        frame.format()
                    )));
                }
                if expect != Expected::default() {
                    return Err(Error::value(
                        "width=, height= and stride= describe a raw buffer; a Frame carries \
                         its own geometry",
                    ));
                }
                let (layout, span) = (*frame.layout(), frame.byte_len());
                Ok(Src {
                    pixels: Pixels::Frame(frame),
                    layout,
                    span,
                })
            }
            Pixels::Buffer(b) => {
                let Some(fmt) = fmt else {
                    return Err(Error::value(
                        "src_format is required when the source is not a framebus.Frame",
                    ));
                };
                let (layout, span) = b.image(fmt, expect, "source")?;
                Ok(Src {
                    pixels: Pixels::Buffer(b),
                    layout,
                    span,
                })
            }
        }
    }

    fn start(&self) -> usize {
        self.pixels.range().0
    }

    fn image(&self) -> Result<ImageRef<'_>> {
        // SAFETY: the memory stays valid while `self` lives (a frame holds its
        // lease; a buffer export pins the exporter's memory), and `span` bytes
        // are inside it (frame: byte_len ≤ slot capacity; buffer: the span its
        // shape and strides describe, checked by `FrameLayout::from_strides`).
        // Kernels only read it; a concurrent writer elsewhere could tear
        // pixels, as with any NumPy read.
        let data = unsafe { std::slice::from_raw_parts(self.start() as *const u8, self.span) };
        Ok(ImageRef::new(data, self.layout)?)
    }

    /// Where a new result goes: `explicit`, else the source frame's pool if it
    /// is open, else the (bounded) default pool.
    fn pool(&self, explicit: Option<&Bound<'_, PyFramePool>>) -> Result<FramePool> {
        if let Some(p) = explicit {
            return Ok(p.get().pool.clone());
        }
        match &self.pixels {
            Pixels::Frame(f) => f
                .lease()
                .pool()
                .filter(|p| !p.is_closed())
                .map_or_else(default_pool, Ok),
            Pixels::Buffer(_) => default_pool(),
        }
    }
}

/// Where a result goes: a new frame, or the caller's `out`.
enum Dst<'py> {
    New(Frame),
    /// `pixels` keeps `out`'s memory alive and pinned until the call ends.
    Out {
        obj: Bound<'py, PyAny>,
        pixels: Pixels,
        layout: FrameLayout,
        span: usize,
    },
}

impl<'py> Dst<'py> {
    /// A new frame of `w`×`h` `fmt` from `pool`, or `out`, which must be
    /// exactly that image (never a silently smaller or reshaped one).
    fn new(
        py: Python<'py>,
        out: Option<Bound<'py, PyAny>>,
        src: &Src,
        pool: Option<&Bound<'py, PyFramePool>>,
        (w, h, fmt): (usize, usize, PixelFormat),
    ) -> Result<Dst<'py>> {
        let Some(out) = out else {
            let layout = FrameLayout::new(w, h, fmt, None)?;
            let pool = src.pool(pool)?;
            let policy = pool.config().on_exhausted;
            let lease = crate::pool::acquire(py, &pool, layout.byte_len(), policy)?;
            let mut f = Frame::new(lease, layout)?;
            if let Pixels::Frame(sf) = &src.pixels {
                f = f.with_meta(sf.timestamp_ns(), sf.seq());
            }
            return Ok(Dst::New(f));
        };
        let pixels = Pixels::from_py(&out, true)?;
        let (layout, span) = match &pixels {
            Pixels::Frame(f) => {
                let l = *f.layout();
                if (l.width, l.height, l.format) != (w, h, fmt) {
                    return Err(Error::value(format!(
                        "out is a {}x{} {} frame but a {w}x{h} {fmt} result was asked for",
                        l.width, l.height, l.format
                    )));
                }
                (l, f.byte_len())
            }
            Pixels::Buffer(b) => {
                let expect = Expected {
                    width: Some(w),
                    height: Some(h),
                    stride: None,
                };
                b.image(fmt, expect, "out")?
            }
        };
        let (s0, sn) = (src.start(), src.span);
        let d0 = pixels.range().0;
        if d0 < s0 + sn && s0 < d0 + span {
            return Err(Error::value(
                "out overlaps the source; in-place conversion is not supported",
            ));
        }
        Ok(Dst::Out {
            obj: out,
            pixels,
            layout,
            span,
        })
    }

    fn image(&mut self) -> Result<ImageMut<'_>> {
        match self {
            Dst::New(f) => {
                let l = *f.layout();
                let data = f
                    .data_mut()
                    .ok_or_else(|| Error::value("internal: a new frame is not writable"))?;
                Ok(ImageMut::new(data, l)?)
            }
            Dst::Out {
                pixels,
                layout,
                span,
                ..
            } => {
                // SAFETY: `start .. start + span` is writable memory kept alive by
                // `pixels` (a writable frame's lease or a writable buffer export;
                // `span` checked against its shape by `FrameLayout::from_strides`
                // or the frame's length); it does not overlap the source
                // (checked in `new`), and nothing else in this call references it.
                let data =
                    unsafe { std::slice::from_raw_parts_mut(pixels.range().0 as *mut u8, *span) };
                Ok(ImageMut::new(data, *layout)?)
            }
        }
    }

    /// Bytes the result covers.
    fn byte_len(&self) -> usize {
        match self {
            Dst::New(f) => f.byte_len(),
            Dst::Out { span, .. } => *span,
        }
    }

    fn finish(self, py: Python<'py>) -> Result<Py<PyAny>> {
        match self {
            Dst::New(f) => Ok(Py::new(py, PyFrame::from_frame(f))?.into_any()),
            Dst::Out { obj, .. } => Ok(obj.unbind()),
        }
    }
}

fn options(matrix: &str, range: &str, threads: Option<Int>, simd: Option<&str>) -> Result<Options> {
    Ok(Options {
        simd: simd.map(|s| s.parse::<Simd>()).transpose()?,
        threads: args::opt_count("threads", threads, 0, MAX_THREADS)?,
        matrix: matrix.parse()?,
        range: range.parse()?,
    })
}

/// Most threads a kernel call may ask for (None or 0: all cores).
const MAX_THREADS: usize = 1024;

/// Output bytes from which a kernel runs on a helper thread, so that the
/// calling thread can watch for Ctrl-C and cancel it (below it, a call takes
/// milliseconds and a thread start would cost more than it could save).
const INTERRUPTIBLE_BYTES: usize = 32 << 20;

/// Run a kernel with the GIL released. A big one (`out_bytes` at least
/// [`INTERRUPTIBLE_BYTES`]) runs on a scoped thread while this thread waits in
/// `wait::SLICE`s and checks for signals; a raising signal handler
/// (Ctrl-C) cancels it between rows and its exception is raised.
fn run<T: Send>(
    py: Python<'_>,
    out_bytes: usize,
    job: impl FnOnce(&AtomicBool) -> k::Result<T> + Send,
) -> Result<T> {
    let cancel = AtomicBool::new(false);
    if out_bytes < INTERRUPTIBLE_BYTES {
        return Ok(py.detach(|| job(&cancel))?);
    }
    std::thread::scope(|s| {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let cancel = &cancel;
        s.spawn(move || {
            let _ = done_tx.send(job(cancel)); // a panic drops the sender instead
        });
        // On a signal: cancel (the kernel stops within a row; the scope joins
        // it) and raise the handler's exception.
        let result = wait::join_watched(py, done_rx, |_| {
            cancel.store(true, Ordering::Relaxed);
            wait::OnSignal::Raise
        })?;
        match result {
            Some(r) => Ok(r?),
            None => Err(Error::value("internal: a kernel thread panicked")),
        }
    })
}

fn do_convert<'py>(
    py: Python<'py>,
    src: Src,
    dst_format: &str,
    out: Option<Bound<'py, PyAny>>,
    pool: Option<&Bound<'py, PyFramePool>>,
    opts: Options,
    resize: Option<(usize, usize, Method)>,
) -> Result<Py<PyAny>> {
    let fmt = parse_format(dst_format)?;
    let sl = src.layout;
    let (w, h) = resize.map_or((sl.width, sl.height), |(w, h, _)| (w, h));
    let mut dst = Dst::new(py, out, &src, pool, (w, h, fmt))?;
    {
        let si = src.image()?;
        let out_bytes = dst.byte_len();
        let mut di = dst.image()?;
        run(py, out_bytes, |cancel| match resize {
            None => k::convert_cancellable(&si, &mut di, &opts, cancel),
            Some((_, _, m)) => k::resize_cancellable(&si, &mut di, m, &opts, cancel),
        })?;
    }
    dst.finish(py)
}

fn tensor<'py>(
    py: Python<'py>,
    src: Src,
    size: Option<(Int, Int)>,
    mean: Option<Bound<'py, PyAny>>,
    std: Option<Bound<'py, PyAny>>,
    method: &str,
    opts: Options,
) -> Result<Bound<'py, PyAny>> {
    let sl = src.layout;
    let (w, h) = match size {
        Some((w, h)) => (args::dimension("width", w)?, args::dimension("height", h)?),
        None => (sl.width, sl.height),
    };
    let bytes = 3 * 4 * w * h;
    let limit = default_pool()?.config().max_bytes.unwrap_or(usize::MAX);
    if bytes > limit {
        return Err(Error::value(format!(
            "a {w}x{h} float32 tensor needs {bytes} bytes, more than the default pool's \
             max_bytes={limit} (FRAMEBUS_MAX_BYTES)"
        )));
    }
    let spec = TensorSpec {
        width: w,
        height: h,
        method: method.parse()?,
        mean: args::per_channel("mean", mean.as_ref(), 0.0, false)?,
        std: args::per_channel("std", std.as_ref(), 1.0, true)?,
    };
    let np = py.import("numpy")?;
    let arr = np.call_method1("empty", ((3usize, h, w), "float32"))?;
    let held = BufferExport::new(&arr, true)?;
    {
        let si = src.image()?;
        // SAFETY: a fresh C-contiguous float32 array of 3·h·w items, exported
        // writable and held by `held` for the duration of the call.
        let out = unsafe { std::slice::from_raw_parts_mut(held.ptr().cast::<f32>(), 3 * w * h) };
        run(py, bytes, |cancel| {
            k::to_tensor_cancellable(&si, out, &spec, &opts, cancel)
        })?;
    }
    drop(held);
    Ok(arr)
}

#[pymethods]
impl PyFrame {
    /// Convert to `format` into a new frame from this frame's pool, or into `out`
    /// (a writable Frame or buffer of exactly that image). Returns the result.
    #[pyo3(signature = (format, out=None, *, matrix="bt601", range="limited", threads=None, simd=None))]
    fn convert<'py>(
        slf: &Bound<'py, Self>,
        format: &str,
        out: Option<Bound<'py, PyAny>>,
        matrix: &str,
        range: &str,
        threads: Option<Int>,
        simd: Option<&str>,
    ) -> Result<Py<PyAny>> {
        let src = Src::new(slf.as_any(), None, Expected::default())?;
        let opts = options(matrix, range, threads, simd)?;
        do_convert(slf.py(), src, format, out, None, opts, None)
    }

    /// Resize to `width` × `height` ("bilinear" or "area"), converting to
    /// `format` (default: this frame's) in the same pass.
    #[pyo3(signature = (width, height, method="bilinear", format=None, out=None, *, matrix="bt601", range="limited", threads=None, simd=None))]
    #[allow(clippy::too_many_arguments)]
    fn resize<'py>(
        slf: &Bound<'py, Self>,
        width: Int,
        height: Int,
        method: &str,
        format: Option<&str>,
        out: Option<Bound<'py, PyAny>>,
        matrix: &str,
        range: &str,
        threads: Option<Int>,
        simd: Option<&str>,
    ) -> Result<Py<PyAny>> {
        let src = Src::new(slf.as_any(), None, Expected::default())?;
        let fmt = format.unwrap_or(src.layout.format.name()).to_owned();
        let r = resize_args(width, height, method)?;
        let opts = options(matrix, range, threads, simd)?;
        do_convert(slf.py(), src, &fmt, out, None, opts, Some(r))
    }

    /// Planar RGB float32 NumPy array (3, h, w): `(v / 255 - mean) / std`,
    /// resized to `size=(w, h)` first when given.
    #[pyo3(signature = (size=None, mean=None, std=None, method="area", *, threads=None, simd=None))]
    #[allow(clippy::too_many_arguments)]
    fn to_tensor<'py>(
        slf: &Bound<'py, Self>,
        size: Option<(Int, Int)>,
        mean: Option<Bound<'py, PyAny>>,
        std: Option<Bound<'py, PyAny>>,
        method: &str,
        threads: Option<Int>,
        simd: Option<&str>,
    ) -> Result<Bound<'py, PyAny>> {
        let src = Src::new(slf.as_any(), None, Expected::default())?;
        let opts = options("bt601", "limited", threads, simd)?;
        tensor(slf.py(), src, size, mean, std, method, opts)
    }
}

/// Convert `src` (a Frame, or any buffer of `src_format` pixels) to
/// `dst_format`. Returns `out` when given, else a new Frame from `pool` (or the
/// source frame's pool, or the default pool).
#[pyfunction]
#[pyo3(signature = (src, src_format, dst_format, out=None, *, width=None, height=None, stride=None, matrix="bt601", range="limited", threads=None, simd=None, pool=None))]
#[allow(clippy::too_many_arguments)]
fn convert<'py>(
    py: Python<'py>,
    src: &Bound<'py, PyAny>,
    src_format: Option<&str>,
    dst_format: &str,
    out: Option<Bound<'py, PyAny>>,
    width: Option<Int>,
    height: Option<Int>,
    stride: Option<Int>,
    matrix: &str,
    range: &str,
    threads: Option<Int>,
    simd: Option<&str>,
    pool: Option<Bound<'py, PyFramePool>>,
) -> Result<Py<PyAny>> {
    let src = Src::new(src, src_format, expected(width, height, stride)?)?;
    let opts = options(matrix, range, threads, simd)?;
    do_convert(py, src, dst_format, out, pool.as_ref(), opts, None)
}

/// Validated `(width, height, method)` of a resize.
fn resize_args(width: Int, height: Int, method: &str) -> Result<(usize, usize, Method)> {
    Ok((
        args::dimension("width", width)?,
        args::dimension("height", height)?,
        method.parse()?,
    ))
}

/// The geometry a raw source buffer is said to have (checked against its shape).
fn expected(width: Option<Int>, height: Option<Int>, stride: Option<Int>) -> Result<Expected> {
    Ok(Expected {
        width: width.map(|v| args::dimension("width", v)).transpose()?,
        height: height.map(|v| args::dimension("height", v)).transpose()?,
        stride: args::opt_count("stride", stride, 1, isize::MAX as usize)?,
    })
}

/// Resize `src` to `width` × `height` ("bilinear" or "area"), converting to
/// `format` (default: the source's) in the same pass.
#[pyfunction]
#[pyo3(signature = (src, width, height, method="bilinear", src_format=None, format=None, out=None, *, src_width=None, src_height=None, src_stride=None, matrix="bt601", range="limited", threads=None, simd=None, pool=None))]
#[allow(clippy::too_many_arguments)]
fn resize<'py>(
    py: Python<'py>,
    src: &Bound<'py, PyAny>,
    width: Int,
    height: Int,
    method: &str,
    src_format: Option<&str>,
    format: Option<&str>,
    out: Option<Bound<'py, PyAny>>,
    src_width: Option<Int>,
    src_height: Option<Int>,
    src_stride: Option<Int>,
    matrix: &str,
    range: &str,
    threads: Option<Int>,
    simd: Option<&str>,
    pool: Option<Bound<'py, PyFramePool>>,
) -> Result<Py<PyAny>> {
    let src = Src::new(
        src,
        src_format,
        expected(src_width, src_height, src_stride)?,
    )?;
    let fmt = format.unwrap_or(src.layout.format.name()).to_owned();
    let r = resize_args(width, height, method)?;
    let opts = options(matrix, range, threads, simd)?;
    do_convert(py, src, &fmt, out, pool.as_ref(), opts, Some(r))
}

/// Planar RGB float32 NumPy array (3, h, w) from `src`: `(v / 255 - mean) / std`
/// per channel, resized to `size=(w, h)` first when given.
#[pyfunction]
#[pyo3(signature = (src, size=None, mean=None, std=None, method="area", src_format=None, *, src_width=None, src_height=None, src_stride=None, threads=None, simd=None))]
#[allow(clippy::too_many_arguments)]
fn to_tensor<'py>(
    py: Python<'py>,
    src: &Bound<'py, PyAny>,
    size: Option<(Int, Int)>,
    mean: Option<Bound<'py, PyAny>>,
    std: Option<Bound<'py, PyAny>>,
    method: &str,
    src_format: Option<&str>,
    src_width: Option<Int>,
    src_height: Option<Int>,
    src_stride: Option<Int>,
    threads: Option<Int>,
    simd: Option<&str>,
) -> Result<Bound<'py, PyAny>> {
    let src = Src::new(
        src,
        src_format,
        expected(src_width, src_height, src_stride)?,
    )?;
    let opts = options("bt601", "limited", threads, simd)?;
    tensor(py, src, size, mean, std, method, opts)
}

/// The SIMD levels this machine can run, slowest first ("scalar" always).
#[pyfunction]
fn simd_levels() -> Vec<&'static str> {
    Simd::available().iter().map(|s| s.name()).collect()
}

/// The level a kernel call with `simd` would use (None: best, or FRAMEBUS_SIMD).
#[pyfunction]
#[pyo3(signature = (simd=None))]
fn simd_level(simd: Option<&str>) -> Result<&'static str> {
    let s = simd.map(|s| s.parse::<Simd>()).transpose()?;
    Ok(k::resolve_simd(s)?.name())
}

/// Bytes a buffer must hold for a `width` × `height` `format` image with `stride`.
#[pyfunction]
#[pyo3(signature = (width, height, format, stride=None))]
fn image_nbytes(width: Int, height: Int, format: &str, stride: Option<Int>) -> Result<usize> {
    Ok(needed_bytes(&args::layout(width, height, format, stride)?))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    m.add_function(wrap_pyfunction!(resize, m)?)?;
    m.add_function(wrap_pyfunction!(to_tensor, m)?)?;
    m.add_function(wrap_pyfunction!(simd_levels, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(image_nbytes, m)?)?;
    Ok(())
}
