//! Python face of framebus-kernels: `Frame.convert/resize/to_tensor` and the
//! module functions `convert`, `resize`, `to_tensor`, `simd_levels`, `simd_level`.
//!
//! Sources are a `framebus.Frame` or any object with the buffer protocol whose
//! rows are contiguous (NumPy arrays with padded rows or a row step are fine;
//! a pixel step is not). Results go into `out` (a writable Frame or buffer,
//! checked) or into a new Frame from the source frame's pool (module functions:
//! `pool=` or the default pool). Every kernel runs with the GIL released.

use crate::errors::to_pyerr;
use crate::frame::PyFrame;
use crate::pool::{check_size, default_pool, parse_format, PyFramePool};
use framebus_core::{Frame, FrameLayout, FramePool, PixelFormat};
use framebus_kernels::{
    self as k, needed_bytes, ImageMut, ImageRef, KernelError, Method, Options, Simd, TensorSpec,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use std::mem::MaybeUninit;

/// Map a kernels error to its Python exception (bad arguments → `ValueError`).
fn kerr(e: KernelError) -> PyErr {
    match e {
        KernelError::Core(e) => to_pyerr(e),
        KernelError::ThreadPool { .. } => PyRuntimeError::new_err(e.to_string()),
        e => PyValueError::new_err(e.to_string()),
    }
}

/// A held buffer export (`PyObject_GetBuffer`), released on drop (with the GIL:
/// the type holds raw pointers, so it cannot leave the attached thread).
struct HeldBuffer {
    view: Box<ffi::Py_buffer>,
}

impl HeldBuffer {
    fn get(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<HeldBuffer> {
        let mut view = Box::new(MaybeUninit::<ffi::Py_buffer>::uninit());
        let flags =
            ffi::PyBUF_STRIDES | ffi::PyBUF_FORMAT | if writable { ffi::PyBUF_WRITABLE } else { 0 };
        // SAFETY: `obj` is a live object and `view` points to writable storage
        // for one Py_buffer, which the call fills on success.
        let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) };
        if rc != 0 {
            let err = PyErr::fetch(obj.py());
            let what = if writable {
                "a writable buffer"
            } else {
                "a buffer"
            };
            return Err(PyValueError::new_err(format!(
                "expected a framebus.Frame or an object exporting {what} (NumPy array, \
                 bytearray, memoryview): {err}"
            )));
        }
        // SAFETY: PyObject_GetBuffer returned 0, so the view is initialised.
        let view = unsafe { Box::from_raw(Box::into_raw(view).cast::<ffi::Py_buffer>()) };
        Ok(HeldBuffer { view })
    }

    fn itemsize(&self) -> usize {
        self.view.itemsize as usize
    }

    /// (shape, strides) in items / bytes; 1-D for 0-d exports.
    fn dims(&self) -> (Vec<isize>, Vec<isize>) {
        let v = &*self.view;
        let n = v.ndim as usize;
        if n == 0 || v.shape.is_null() {
            return (vec![v.len / v.itemsize.max(1)], vec![v.itemsize]);
        }
        // SAFETY: with PyBUF_STRIDES the exporter provides `ndim` shape and
        // strides entries that live as long as the view.
        unsafe {
            let shape = std::slice::from_raw_parts(v.shape, n).to_vec();
            let strides = if v.strides.is_null() {
                let mut s = vec![v.itemsize; n];
                for i in (0..n - 1).rev() {
                    s[i] = s[i + 1] * shape[i + 1];
                }
                s
            } else {
                std::slice::from_raw_parts(v.strides, n).to_vec()
            };
            (shape, strides)
        }
    }

    fn format_char(&self) -> u8 {
        if self.view.format.is_null() {
            return b'B';
        }
        // SAFETY: a non-null format is a NUL-terminated string owned by the view.
        let f = unsafe { std::ffi::CStr::from_ptr(self.view.format) }.to_bytes();
        f.iter()
            .copied()
            .find(|c| c.is_ascii_alphabetic() || *c == b'?')
            .unwrap_or(b'B')
    }
}

impl Drop for HeldBuffer {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer and is
        // released exactly once; HeldBuffer is !Send, so the GIL is held here.
        unsafe { ffi::PyBuffer_Release(&mut *self.view) };
    }
}

/// Geometry asked of a raw buffer (`None`: derive from its shape).
#[derive(Clone, Copy, Default)]
struct Want {
    width: Option<usize>,
    height: Option<usize>,
    stride: Option<usize>,
}

/// Pointer, layout and the bytes the view describes for a buffer holding `fmt`.
fn buffer_image(
    b: &HeldBuffer,
    fmt: PixelFormat,
    want: Want,
    what: &str,
) -> PyResult<(*mut u8, FrameLayout, usize)> {
    let item = b.itemsize();
    let fc = b.format_char();
    if !matches!(fc, b'B' | b'b' | b'c' | b'H' | b'h') {
        return Err(PyValueError::new_err(format!(
            "{what}: buffer items of format {:?} are not 8- or 16-bit integers",
            fc as char
        )));
    }
    if item != 1 && item != fmt.sample_bytes() {
        return Err(PyValueError::new_err(format!(
            "{what}: items of {item} bytes cannot hold {fmt} samples of {} bytes",
            fmt.sample_bytes()
        )));
    }
    let (shape, strides) = b.dims();
    if let Some(s) = strides.iter().find(|s| **s < 0) {
        return Err(PyValueError::new_err(format!(
            "{what}: negative stride {s} is not supported (use numpy.ascontiguousarray)"
        )));
    }
    if shape.contains(&0) {
        return Err(PyValueError::new_err(format!(
            "{what}: empty buffer (shape {shape:?})"
        )));
    }
    let (shape, strides): (Vec<usize>, Vec<usize>) = (
        shape.iter().map(|&v| v as usize).collect(),
        strides.iter().map(|&v| v as usize).collect(),
    );
    // Bytes of one row as the view describes it: every dimension after the first
    // must be C-contiguous.
    let mut row = item;
    for i in (1..shape.len()).rev() {
        if shape[i] > 1 && strides[i] != row {
            return Err(PyValueError::new_err(format!(
                "{what}: pixels within a row must be contiguous, got shape {shape:?} and \
                 byte strides {strides:?} (use numpy.ascontiguousarray)"
            )));
        }
        row *= shape[i];
    }
    let layout;
    let span;
    if shape.len() == 1 {
        if strides[0] != item {
            return Err(PyValueError::new_err(format!(
                "{what}: a 1-D buffer must be contiguous, got byte stride {}",
                strides[0]
            )));
        }
        span = shape[0] * item;
        let (Some(w), Some(h)) = (want.width, want.height) else {
            return Err(PyValueError::new_err(format!(
                "{what}: width= and height= are needed for a flat buffer of {span} bytes"
            )));
        };
        layout = FrameLayout::new(w, h, fmt, want.stride).map_err(to_pyerr)?;
    } else {
        let rows = shape[0];
        let s0 = if rows == 1 { row } else { strides[0] };
        if rows > 1 && s0 < row {
            return Err(PyValueError::new_err(format!(
                "{what}: rows overlap (row stride {s0} < row size {row})"
            )));
        }
        span = (rows - 1) * s0 + row;
        let bpp = fmt.bytes_per_pixel();
        let h = match want.height {
            Some(h) => h,
            None if fmt.is_planar() => rows * 2 / 3,
            None => rows,
        };
        let w = match want.width {
            Some(w) => w,
            None if row.is_multiple_of(bpp) => row / bpp,
            None => {
                return Err(PyValueError::new_err(format!(
                    "{what}: a row of {row} bytes is not a whole number of {bpp}-byte {fmt} pixels"
                )))
            }
        };
        layout = FrameLayout::new(w, h, fmt, Some(want.stride.unwrap_or(s0))).map_err(to_pyerr)?;
    }
    Ok((b.view.buf.cast::<u8>(), layout, span))
}

/// A source image: a frame (its lease kept alive) or a held buffer.
enum Src {
    Frame(Frame),
    /// `_held` pins the exporter's memory until the call ends.
    Buffer {
        _held: HeldBuffer,
        ptr: *mut u8,
        layout: FrameLayout,
        span: usize,
    },
}

impl Src {
    fn new(obj: &Bound<'_, PyAny>, fmt: Option<&str>, want: Want) -> PyResult<Src> {
        let fmt = fmt.map(parse_format).transpose()?;
        if let Ok(f) = obj.cast::<PyFrame>() {
            let frame = f.get().frame()?;
            if let Some(fmt) = fmt {
                if fmt != frame.format() {
                    return Err(PyValueError::new_err(format!(
                        "src_format {fmt} does not match the frame's format {}",
                        frame.format()
                    )));
                }
            }
            return Ok(Src::Frame(frame));
        }
        let Some(fmt) = fmt else {
            return Err(PyValueError::new_err(
                "src_format is required when the source is not a framebus.Frame",
            ));
        };
        let b = HeldBuffer::get(obj, false)?;
        let (p, l, span) = buffer_image(&b, fmt, want, "source")?;
        Ok(Src::Buffer {
            _held: b,
            ptr: p,
            layout: l,
            span,
        })
    }

    fn layout(&self) -> FrameLayout {
        match self {
            Src::Frame(f) => *f.layout(),
            Src::Buffer { layout, .. } => *layout,
        }
    }

    /// (start, bytes) of the memory read.
    fn range(&self) -> (usize, usize) {
        match self {
            Src::Frame(f) => (f.as_ptr() as usize, f.byte_len()),
            Src::Buffer { ptr, span, .. } => (*ptr as usize, *span),
        }
    }

    fn image(&self) -> PyResult<ImageRef<'_>> {
        let (p, n) = self.range();
        // SAFETY: the memory stays valid while `self` lives (a frame holds its
        // lease; a held buffer export pins the exporter's memory), and `n` bytes
        // are inside it (frame: byte_len ≤ slot capacity; buffer: the span its
        // shape and strides describe). Kernels only read it; a concurrent writer
        // elsewhere could tear pixels, as with any NumPy read.
        let data = unsafe { std::slice::from_raw_parts(p as *const u8, n) };
        ImageRef::new(data, self.layout()).map_err(kerr)
    }

    fn pool(&self, explicit: Option<&Bound<'_, PyFramePool>>) -> FramePool {
        if let Some(p) = explicit {
            return p.get().pool.clone();
        }
        match self {
            Src::Frame(f) => f.lease().pool().unwrap_or_else(default_pool),
            Src::Buffer { .. } => default_pool(),
        }
    }
}

/// Where a result goes: a new frame, or the caller's `out`.
enum Dst<'py> {
    New(Frame),
    /// `_frame` / `_held` keep `out`'s memory alive and pinned until the call ends.
    Out {
        obj: Bound<'py, PyAny>,
        _frame: Option<Frame>,
        _held: Option<HeldBuffer>,
        ptr: *mut u8,
        layout: FrameLayout,
        n: usize,
    },
}

impl<'py> Dst<'py> {
    fn new(
        py: Python<'py>,
        out: Option<Bound<'py, PyAny>>,
        src: &Src,
        pool: FramePool,
        w: usize,
        h: usize,
        fmt: PixelFormat,
    ) -> PyResult<Dst<'py>> {
        let Some(out) = out else {
            // A pool with on_exhausted="block" may wait here: not with the GIL held.
            let mut f = py
                .detach(|| pool.acquire_frame(w, h, fmt, None))
                .map_err(to_pyerr)?;
            if let Src::Frame(sf) = src {
                f = f.with_meta(sf.timestamp_ns(), sf.seq());
            }
            return Ok(Dst::New(f));
        };
        let (frame, held, p, l, n) = if let Ok(pf) = out.cast::<PyFrame>() {
            let f = pf.get().frame()?;
            if !f.is_writable() {
                return Err(PyValueError::new_err("out is a read-only Frame"));
            }
            if f.format() != fmt {
                return Err(PyValueError::new_err(format!(
                    "out is a {} frame but {fmt} was asked for",
                    f.format()
                )));
            }
            let (p, l, n) = (f.as_ptr(), *f.layout(), f.byte_len());
            (Some(f), None, p, l, n)
        } else {
            let b = HeldBuffer::get(&out, true)?;
            let want = Want {
                width: Some(w),
                height: Some(h),
                stride: None,
            };
            let (shape, _) = b.dims();
            let want = if shape.len() >= 2 {
                Want {
                    stride: None,
                    ..Default::default()
                }
            } else {
                want
            };
            let (p, l, n) = buffer_image(&b, fmt, want, "out")?;
            (None, Some(b), p, l, n)
        };
        let (s0, sn) = src.range();
        let d0 = p as usize;
        if d0 < s0 + sn && s0 < d0 + n {
            return Err(PyValueError::new_err(
                "out overlaps the source; in-place conversion is not supported",
            ));
        }
        Ok(Dst::Out {
            obj: out,
            _frame: frame,
            _held: held,
            ptr: p,
            layout: l,
            n,
        })
    }

    fn image(&mut self) -> PyResult<ImageMut<'_>> {
        let (data, layout) = match self {
            Dst::New(f) => {
                let l = *f.layout();
                (
                    f.data_mut()
                        .expect("a freshly acquired frame is unique and writable"),
                    l,
                )
            }
            Dst::Out { ptr, layout, n, .. } => {
                // SAFETY: `ptr .. ptr + n` is writable memory kept alive by `self`
                // (a writable frame's lease, or a writable buffer export); it does
                // not overlap the source (checked in `new`), and nothing else in
                // this call references it.
                let data = unsafe { std::slice::from_raw_parts_mut(*ptr, *n) };
                (data, *layout)
            }
        };
        ImageMut::new(data, layout).map_err(kerr)
    }

    fn finish(self, py: Python<'py>) -> PyResult<Py<PyAny>> {
        match self {
            Dst::New(f) => Ok(Py::new(py, PyFrame::from_frame(f))?.into_any()),
            Dst::Out { obj, .. } => Ok(obj.unbind()),
        }
    }
}

fn options(
    matrix: &str,
    range: &str,
    threads: Option<i64>,
    simd: Option<&str>,
) -> PyResult<Options> {
    let threads = match threads {
        None => None,
        Some(t) if (0..=1024).contains(&t) => Some(t as usize),
        Some(t) => {
            return Err(PyValueError::new_err(format!(
                "invalid threads: {t} (use None or 0 for all cores, 1 for the calling thread, \
                 at most 1024)"
            )))
        }
    };
    Ok(Options {
        simd: simd.map(|s| s.parse::<Simd>()).transpose().map_err(kerr)?,
        threads,
        matrix: matrix.parse().map_err(kerr)?,
        range: range.parse().map_err(kerr)?,
    })
}

#[allow(clippy::too_many_arguments)]
fn do_convert<'py>(
    py: Python<'py>,
    src: Src,
    dst_format: &str,
    out: Option<Bound<'py, PyAny>>,
    pool: Option<&Bound<'py, PyFramePool>>,
    opts: Options,
    resize: Option<(usize, usize, Method)>,
) -> PyResult<Py<PyAny>> {
    let fmt = parse_format(dst_format)?;
    let sl = src.layout();
    let (w, h) = resize
        .map(|(w, h, _)| (w, h))
        .unwrap_or((sl.width, sl.height));
    let mut dst = Dst::new(py, out, &src, src.pool(pool), w, h, fmt)?;
    {
        let si = src.image()?;
        let mut di = dst.image()?;
        py.detach(|| match resize {
            None => k::convert(&si, &mut di, &opts),
            Some((_, _, m)) => k::resize(&si, &mut di, m, &opts),
        })
        .map_err(kerr)?;
    }
    dst.finish(py)
}

fn tensor<'py>(
    py: Python<'py>,
    src: Src,
    size: Option<(i64, i64)>,
    mean: Option<Bound<'py, PyAny>>,
    std: Option<Bound<'py, PyAny>>,
    method: &str,
    opts: Options,
) -> PyResult<Bound<'py, PyAny>> {
    let sl = src.layout();
    let (w, h) = match size {
        Some((w, h)) => (check_size("width", w)?, check_size("height", h)?),
        None => (sl.width, sl.height),
    };
    let three = |v: Option<Bound<'py, PyAny>>, what: &str, default: f32| -> PyResult<[f32; 3]> {
        let Some(v) = v else { return Ok([default; 3]) };
        if let Ok(x) = v.extract::<f32>() {
            return Ok([x; 3]);
        }
        let xs: Vec<f32> = v.extract().map_err(|_| {
            PyValueError::new_err(format!("{what} must be a number or 3 numbers (R, G, B)"))
        })?;
        <[f32; 3]>::try_from(xs.as_slice()).map_err(|_| {
            PyValueError::new_err(format!(
                "{what} must have 3 values (R, G, B), got {}",
                xs.len()
            ))
        })
    };
    let spec = TensorSpec {
        width: w,
        height: h,
        method: method.parse().map_err(kerr)?,
        mean: three(mean, "mean", 0.0)?,
        std: three(std, "std", 1.0)?,
    };
    let np = py.import("numpy")?;
    let arr = np.call_method1("empty", ((3usize, h, w), "float32"))?;
    let held = HeldBuffer::get(&arr, true)?;
    let out_ptr = held.view.buf.cast::<f32>();
    {
        let si = src.image()?;
        // SAFETY: a fresh C-contiguous float32 array of 3·h·w items, exported
        // writable and held by `held` for the duration of the call.
        let out = unsafe { std::slice::from_raw_parts_mut(out_ptr, 3 * w * h) };
        py.detach(|| k::to_tensor(&si, out, &spec, &opts))
            .map_err(kerr)?;
    }
    drop(held);
    Ok(arr)
}

#[pymethods]
impl PyFrame {
    /// Convert to `format` into a new frame from this frame's pool, or into `out`
    /// (a writable Frame or buffer of the right size). Returns the result.
    #[pyo3(signature = (format, out=None, *, matrix="bt601", range="limited", threads=None, simd=None))]
    fn convert<'py>(
        slf: &Bound<'py, Self>,
        format: &str,
        out: Option<Bound<'py, PyAny>>,
        matrix: &str,
        range: &str,
        threads: Option<i64>,
        simd: Option<&str>,
    ) -> PyResult<Py<PyAny>> {
        let src = Src::new(slf.as_any(), None, Want::default())?;
        let opts = options(matrix, range, threads, simd)?;
        do_convert(slf.py(), src, format, out, None, opts, None)
    }

    /// Resize to `width` × `height` ("bilinear" or "area"), converting to
    /// `format` (default: this frame's) in the same pass.
    #[pyo3(signature = (width, height, method="bilinear", format=None, out=None, *, matrix="bt601", range="limited", threads=None, simd=None))]
    #[allow(clippy::too_many_arguments)]
    fn resize<'py>(
        slf: &Bound<'py, Self>,
        width: i64,
        height: i64,
        method: &str,
        format: Option<&str>,
        out: Option<Bound<'py, PyAny>>,
        matrix: &str,
        range: &str,
        threads: Option<i64>,
        simd: Option<&str>,
    ) -> PyResult<Py<PyAny>> {
        let src = Src::new(slf.as_any(), None, Want::default())?;
        let fmt = format.unwrap_or(src.layout().format.name()).to_owned();
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
        size: Option<(i64, i64)>,
        mean: Option<Bound<'py, PyAny>>,
        std: Option<Bound<'py, PyAny>>,
        method: &str,
        threads: Option<i64>,
        simd: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let src = Src::new(slf.as_any(), None, Want::default())?;
        let opts = options("bt601", "limited", threads, simd)?;
        tensor(slf.py(), src, size, mean, std, method, opts)
    }
}

/// Convert `src` (a Frame, or any buffer with rows of `src_format` pixels) to
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
    width: Option<i64>,
    height: Option<i64>,
    stride: Option<i64>,
    matrix: &str,
    range: &str,
    threads: Option<i64>,
    simd: Option<&str>,
    pool: Option<Bound<'py, PyFramePool>>,
) -> PyResult<Py<PyAny>> {
    let want = want(width, height, stride)?;
    let src = Src::new(src, src_format, want)?;
    let opts = options(matrix, range, threads, simd)?;
    do_convert(py, src, dst_format, out, pool.as_ref(), opts, None)
}

/// Validated `(width, height, method)` of a resize.
fn resize_args(width: i64, height: i64, method: &str) -> PyResult<(usize, usize, Method)> {
    Ok((
        check_size("width", width)?,
        check_size("height", height)?,
        method.parse().map_err(kerr)?,
    ))
}

fn want(width: Option<i64>, height: Option<i64>, stride: Option<i64>) -> PyResult<Want> {
    Ok(Want {
        width: width.map(|v| check_size("width", v)).transpose()?,
        height: height.map(|v| check_size("height", v)).transpose()?,
        stride: stride.map(|v| check_size("stride", v)).transpose()?,
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
    width: i64,
    height: i64,
    method: &str,
    src_format: Option<&str>,
    format: Option<&str>,
    out: Option<Bound<'py, PyAny>>,
    src_width: Option<i64>,
    src_height: Option<i64>,
    src_stride: Option<i64>,
    matrix: &str,
    range: &str,
    threads: Option<i64>,
    simd: Option<&str>,
    pool: Option<Bound<'py, PyFramePool>>,
) -> PyResult<Py<PyAny>> {
    let src = Src::new(src, src_format, want(src_width, src_height, src_stride)?)?;
    let fmt = format.unwrap_or(src.layout().format.name()).to_owned();
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
    size: Option<(i64, i64)>,
    mean: Option<Bound<'py, PyAny>>,
    std: Option<Bound<'py, PyAny>>,
    method: &str,
    src_format: Option<&str>,
    src_width: Option<i64>,
    src_height: Option<i64>,
    src_stride: Option<i64>,
    threads: Option<i64>,
    simd: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let src = Src::new(src, src_format, want(src_width, src_height, src_stride)?)?;
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
fn simd_level(simd: Option<&str>) -> PyResult<&'static str> {
    let s = simd.map(|s| s.parse::<Simd>()).transpose().map_err(kerr)?;
    Ok(k::resolve_simd(s).map_err(kerr)?.name())
}

/// Bytes a buffer must hold for a `width` × `height` `format` image with `stride`.
#[pyfunction]
#[pyo3(signature = (width, height, format, stride=None))]
fn image_nbytes(width: i64, height: i64, format: &str, stride: Option<i64>) -> PyResult<usize> {
    let stride = stride.map(|v| check_size("stride", v)).transpose()?;
    let l = FrameLayout::new(
        check_size("width", width)?,
        check_size("height", height)?,
        parse_format(format)?,
        stride,
    )
    .map_err(to_pyerr)?;
    Ok(needed_bytes(&l))
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
