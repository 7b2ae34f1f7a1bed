//! Python face of framebus-capture: `framebus.grab`, `Grabber`, `Capture`,
//! `Region`, `Frame.save_png`, and the test-only `_test_put_image`.
//!
//! Conversion, GIL release and error mapping only. Every X round trip, PNG
//! encode and wait runs inside `py.detach`; grabbers sit behind a mutex that
//! is taken with the GIL released, so threads grabbing at once never
//! deadlock on the GIL. Errors: bad regions/monitors/arguments → `ValueError`
//! (naming the bounds), waits that time out → `TimeoutError`, pool errors via
//! `errors::to_pyerr`, everything else → `framebus.CaptureError`.

use crate::errors::{to_pyerr, CaptureError as PyCaptureError};
use crate::frame::PyFrame;
use crate::pool::{default_pool, parse_timeout, PyFramePool};
use framebus_capture::{
    BackendChoice, Capture, CaptureConfig, CaptureError, Grabber, Monitor, Region,
};
use framebus_core::FramePool;
use framebus_kernels::png;
use pyo3::exceptions::{PyOSError, PyStopIteration, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// Map a capture error to its Python exception, once.
pub fn capture_err(e: CaptureError) -> PyErr {
    match e {
        CaptureError::Core(c) => to_pyerr(c),
        CaptureError::Timeout(_) => PyTimeoutError::new_err(e.to_string()),
        e if e.is_bad_input() => PyValueError::new_err(e.to_string()),
        e => PyCaptureError::new_err(e.to_string()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A rectangle of the screen: `Region(left, top, width, height)`.
#[pyclass(name = "Region", module = "framebus", frozen, eq, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PyRegion {
    #[pyo3(get)]
    left: i32,
    #[pyo3(get)]
    top: i32,
    #[pyo3(get)]
    width: u32,
    #[pyo3(get)]
    height: u32,
}

impl From<Region> for PyRegion {
    fn from(r: Region) -> Self {
        PyRegion {
            left: r.left,
            top: r.top,
            width: r.width,
            height: r.height,
        }
    }
}

#[pymethods]
impl PyRegion {
    #[new]
    fn new(left: i64, top: i64, width: i64, height: i64) -> PyResult<Self> {
        Ok(region_from_ints(left, top, width, height)?.into())
    }
    #[getter]
    fn right(&self) -> i64 {
        self.left as i64 + self.width as i64
    }
    #[getter]
    fn bottom(&self) -> i64 {
        self.top as i64 + self.height as i64
    }
    fn __repr__(&self) -> String {
        format!(
            "Region(left={}, top={}, width={}, height={})",
            self.left, self.top, self.width, self.height
        )
    }
}

fn region_from_ints(left: i64, top: i64, width: i64, height: i64) -> PyResult<Region> {
    let coord = |name: &str, v: i64| {
        i32::try_from(v).map_err(|_| {
            PyValueError::new_err(format!("region {name}={v} is out of range for a screen"))
        })
    };
    let size = |name: &str, v: i64| {
        if v <= 0 {
            return Err(PyValueError::new_err(format!(
                "region {name}={v} must be at least 1 (region {left},{top} {width}x{height})"
            )));
        }
        u32::try_from(v).map_err(|_| {
            PyValueError::new_err(format!("region {name}={v} is out of range for a screen"))
        })
    };
    Ok(Region::new(
        coord("left", left)?,
        coord("top", top)?,
        size("width", width)?,
        size("height", height)?,
    ))
}

/// What a `region=` argument asks for.
#[derive(Clone, Copy)]
enum Target {
    Screen,
    Monitor(usize),
    Rect(Region),
}

impl Target {
    fn resolve(self, g: &mut Grabber) -> framebus_capture::Result<Option<Region>> {
        match self {
            Target::Screen => Ok(None),
            Target::Monitor(i) => g.monitor_region(i).map(Some),
            Target::Rect(r) => Ok(Some(r)),
        }
    }
}

/// Parse `region`: None, a monitor index, a `Region`, a dict with
/// left/top/width/height (mss style) or a 4-tuple box (left, top, right, bottom).
fn parse_target(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Target> {
    let Some(obj) = obj else {
        return Ok(Target::Screen);
    };
    if obj.is_none() {
        return Ok(Target::Screen);
    }
    if let Ok(r) = obj.cast::<PyRegion>() {
        let r = r.get();
        return Ok(Target::Rect(Region::new(r.left, r.top, r.width, r.height)));
    }
    if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err("region must not be a bool"));
    }
    if let Ok(i) = obj.extract::<i64>() {
        return usize::try_from(i)
            .map(Target::Monitor)
            .map_err(|_| PyValueError::new_err(format!("monitor index {i} must be >= 0")));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let get = |k: &str| -> PyResult<i64> {
            match d.get_item(k)? {
                Some(v) => v.extract::<i64>().map_err(|_| {
                    PyTypeError::new_err(format!("region[{k:?}] must be an int, got {v:?}"))
                }),
                None => Err(PyValueError::new_err(format!(
                    "region dict needs the keys left, top, width, height; {k:?} is missing"
                ))),
            }
        };
        let (l, t, w, h) = (get("left")?, get("top")?, get("width")?, get("height")?);
        return Ok(Target::Rect(region_from_ints(l, t, w, h)?));
    }
    if obj.is_instance_of::<PyTuple>() || obj.is_instance_of::<PyList>() {
        let v: Vec<i64> = obj.extract().map_err(|_| {
            PyTypeError::new_err("a region tuple must hold 4 ints (left, top, right, bottom)")
        })?;
        if let [l, t, r, b] = v[..] {
            return Ok(Target::Rect(region_from_ints(l, t, r - l, b - t)?));
        }
        return Err(PyValueError::new_err(format!(
            "a region tuple must be (left, top, right, bottom), got {} values",
            v.len()
        )));
    }
    Err(PyTypeError::new_err(format!(
        "region must be None, a monitor index, a Region, a dict or a (left, top, right, bottom) tuple, not {}",
        obj.get_type().name()?
    )))
}

fn parse_backend(backend: &str) -> PyResult<BackendChoice> {
    backend.parse().map_err(capture_err)
}

fn pool_of(pool: Option<PyRef<'_, PyFramePool>>) -> Option<FramePool> {
    pool.map(|p| p.pool.clone())
}

fn monitors_to_py<'py>(py: Python<'py>, monitors: Vec<Monitor>) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for m in monitors {
        let d = PyDict::new(py);
        d.set_item("left", m.left)?;
        d.set_item("top", m.top)?;
        d.set_item("width", m.width)?;
        d.set_item("height", m.height)?;
        d.set_item("name", m.name)?;
        d.set_item("output", m.output)?;
        d.set_item("is_primary", m.primary)?;
        list.append(d)?;
    }
    Ok(list)
}

/// A reusable connection to an X display that grabs into pool slots.
#[pyclass(name = "Grabber", module = "framebus", frozen)]
pub struct PyGrabber {
    inner: Mutex<Option<Grabber>>,
    display: String,
}

impl PyGrabber {
    fn with<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Grabber) -> framebus_capture::Result<R> + Send,
    ) -> PyResult<R> {
        py.detach(|| {
            let mut g = lock(&self.inner);
            let g = g.as_mut().ok_or_else(|| {
                PyCaptureError::new_err(format!("the grabber for {:?} is closed", self.display))
            })?;
            f(g).map_err(capture_err)
        })
    }
}

#[pymethods]
impl PyGrabber {
    /// `backend`: "auto" (MIT-SHM, else XGetImage), "xshm" or "xgetimage".
    #[new]
    #[pyo3(signature = (display=None, backend="auto", pool=None))]
    fn new(
        py: Python<'_>,
        display: Option<String>,
        backend: &str,
        pool: Option<PyRef<'_, PyFramePool>>,
    ) -> PyResult<Self> {
        let choice = parse_backend(backend)?;
        let pool = pool_of(pool).unwrap_or_else(default_pool);
        let g = py
            .detach(|| Grabber::open(display.as_deref(), choice, pool))
            .map_err(capture_err)?;
        Ok(PyGrabber {
            display: g.display().to_owned(),
            inner: Mutex::new(Some(g)),
        })
    }

    /// Grab `region` into a slot of `pool` (default: the grabber's pool).
    #[pyo3(signature = (region=None, cursor=false, pool=None))]
    fn grab(
        &self,
        py: Python<'_>,
        region: Option<&Bound<'_, PyAny>>,
        cursor: bool,
        pool: Option<PyRef<'_, PyFramePool>>,
    ) -> PyResult<PyFrame> {
        let target = parse_target(region)?;
        let pool = pool_of(pool);
        let frame = self.with(py, |g| {
            let r = target.resolve(g)?;
            g.grab(r, cursor, pool.as_ref())
        })?;
        Ok(PyFrame::from_frame(frame))
    }

    /// Monitors now: index 0 = the whole screen, then each RandR monitor.
    #[getter]
    fn monitors<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let m = self.with(py, |g| g.monitors())?;
        monitors_to_py(py, m)
    }

    /// (width, height) of the screen now.
    #[getter]
    fn screen_size(&self, py: Python<'_>) -> PyResult<(u32, u32)> {
        self.with(py, |g| g.screen_size())
    }

    /// "xshm" or "xgetimage".
    #[getter]
    fn backend(&self, py: Python<'_>) -> PyResult<&'static str> {
        self.with(py, |g| Ok(g.backend().name()))
    }

    /// Why the backend is not MIT-SHM (None while it is).
    #[getter]
    fn backend_reason(&self, py: Python<'_>) -> PyResult<Option<String>> {
        self.with(py, |g| Ok(g.backend_reason().map(str::to_owned)))
    }

    #[getter]
    fn display(&self) -> &str {
        &self.display
    }

    /// MIT-SHM segments attached now (one per live pool slot grabbed into).
    #[getter]
    fn attached_segments(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |g| Ok(g.attached_segments()))
    }

    /// Close the X connection; frames already grabbed stay valid.
    fn close(&self, py: Python<'_>) {
        let g = py.detach(|| lock(&self.inner).take());
        drop(g);
    }

    #[getter]
    fn closed(&self) -> bool {
        lock(&self.inner).is_none()
    }

    fn __repr__(&self) -> String {
        match &*lock(&self.inner) {
            Some(g) => format!(
                "Grabber(display={:?}, backend={:?})",
                self.display,
                g.backend().name()
            ),
            None => format!("Grabber(display={:?}, closed)", self.display),
        }
    }
}

/// The grabber behind `framebus.grab()`, reopened when another display is asked for.
static SHARED: Mutex<Option<Grabber>> = Mutex::new(None);

/// Grab the screen (or a monitor or region) once, into `pool` (default pool).
#[pyfunction]
#[pyo3(signature = (region=None, cursor=false, pool=None, display=None))]
fn grab(
    py: Python<'_>,
    region: Option<&Bound<'_, PyAny>>,
    cursor: bool,
    pool: Option<PyRef<'_, PyFramePool>>,
    display: Option<String>,
) -> PyResult<PyFrame> {
    let target = parse_target(region)?;
    let pool = pool_of(pool);
    let frame = py.detach(|| {
        let mut shared = lock(&SHARED);
        let wanted = display
            .clone()
            .or_else(|| std::env::var("DISPLAY").ok())
            .unwrap_or_default();
        if shared.as_ref().is_none_or(|g| g.display() != wanted) {
            *shared = None;
            *shared = Some(Grabber::open(
                display.as_deref(),
                BackendChoice::Auto,
                default_pool(),
            )?);
        }
        let g = shared.as_mut().expect("opened above");
        let result = target
            .resolve(g)
            .and_then(|r| g.grab(r, cursor, pool.as_ref()));
        if matches!(result, Err(CaptureError::X { .. })) {
            // Maybe the server went away: reconnect on the next call.
            *shared = None;
        }
        result
    });
    Ok(PyFrame::from_frame(frame.map_err(capture_err)?))
}

/// Continuous capture on a Rust thread into pool slots.
#[pyclass(name = "Capture", module = "framebus", frozen)]
pub struct PyCapture {
    inner: Capture,
    pool: FramePool,
    own_pool: bool,
}

#[pymethods]
impl PyCapture {
    /// Start capturing `region` at `target_fps`, keeping at most `buffer`
    /// unseen frames (older ones are dropped). `target_fps=None` captures on
    /// demand: the next grab starts when the consumer takes the last frame.
    #[new]
    #[pyo3(signature = (region=None, target_fps=Some(60.0), buffer=3, pool=None, cursor=false, display=None, backend="auto"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        region: Option<&Bound<'_, PyAny>>,
        target_fps: Option<f64>,
        buffer: i64,
        pool: Option<PyRef<'_, PyFramePool>>,
        cursor: bool,
        display: Option<String>,
        backend: &str,
    ) -> PyResult<Self> {
        let target = parse_target(region)?;
        let choice = parse_backend(backend)?;
        if buffer < 1 {
            return Err(PyValueError::new_err(format!(
                "buffer={buffer} must be at least 1 frame"
            )));
        }
        let own_pool = pool.is_none();
        // A private pool by default, so stop() can give its memory back.
        let pool = pool_of(pool).unwrap_or_default();
        let thread_pool = pool.clone();
        let inner = py
            .detach(|| {
                let mut g = Grabber::open(display.as_deref(), choice, thread_pool)?;
                let region = target.resolve(&mut g)?;
                Capture::start(
                    g,
                    CaptureConfig {
                        region,
                        target_fps,
                        buffer: buffer as usize,
                        cursor,
                    },
                )
            })
            .map_err(capture_err)?;
        Ok(PyCapture {
            inner,
            pool,
            own_pool,
        })
    }

    /// The newest frame not returned before, waiting up to `timeout` seconds
    /// (None = forever). `allow_repeat=True` returns the last frame at once
    /// even if it was returned already. Raises TimeoutError, or CaptureError
    /// once stopped.
    #[pyo3(signature = (timeout=None, allow_repeat=false))]
    fn latest(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        allow_repeat: bool,
    ) -> PyResult<PyFrame> {
        let timeout = parse_timeout(timeout)?;
        let f = py
            .detach(|| self.inner.latest(timeout, allow_repeat))
            .map_err(capture_err)?;
        Ok(PyFrame::from_frame(f))
    }

    /// The oldest frame not returned before (every frame the buffer kept, in order).
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PyFrame> {
        let timeout = parse_timeout(timeout)?;
        let f = py
            .detach(|| self.inner.next(timeout))
            .map_err(capture_err)?;
        Ok(PyFrame::from_frame(f))
    }

    /// Iterate over frames in order until `stop()` (or `timeout` without a frame).
    #[pyo3(signature = (timeout=None))]
    fn frames(slf: Py<Self>, timeout: Option<f64>) -> PyResult<CaptureFrames> {
        parse_timeout(timeout)?;
        Ok(CaptureFrames {
            capture: slf,
            timeout,
        })
    }

    /// Stop and join the capture thread. Frames already returned stay valid.
    fn stop(&self, py: Python<'_>) {
        py.detach(|| self.inner.stop());
        if self.own_pool {
            self.pool.close();
        }
    }

    #[getter]
    fn running(&self) -> bool {
        self.inner.is_running()
    }

    /// Counters: captured, delivered, dropped, buffered.
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("captured", s.captured)?;
        d.set_item("delivered", s.delivered)?;
        d.set_item("dropped", s.dropped)?;
        d.set_item("buffered", s.buffered)?;
        Ok(d)
    }

    /// Frames grabbed but never returned (ring overflow or skipped by latest()).
    #[getter]
    fn dropped(&self) -> u64 {
        self.inner.stats().dropped
    }

    #[getter]
    fn captured(&self) -> u64 {
        self.inner.stats().captured
    }

    #[getter]
    fn region(&self) -> PyRegion {
        self.inner.region().into()
    }

    #[getter]
    fn backend(&self) -> &'static str {
        self.inner.backend().0.name()
    }

    #[getter]
    fn backend_reason(&self) -> Option<String> {
        self.inner.backend().1
    }

    /// The error that ended the capture thread, if any.
    #[getter]
    fn error(&self) -> Option<String> {
        self.inner.error()
    }

    #[getter]
    fn pool(&self) -> PyFramePool {
        PyFramePool {
            pool: self.pool.clone(),
        }
    }

    fn __repr__(&self) -> String {
        let s = self.inner.stats();
        format!(
            "Capture(region={}, running={}, captured={}, dropped={})",
            self.inner.region(),
            self.inner.is_running(),
            s.captured,
            s.dropped
        )
    }
}

/// Iterator returned by `Capture.frames()`.
#[pyclass(module = "framebus")]
pub struct CaptureFrames {
    capture: Py<PyCapture>,
    timeout: Option<f64>,
}

#[pymethods]
impl CaptureFrames {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<PyFrame> {
        let cap = self.capture.get();
        let timeout = parse_timeout(self.timeout)?;
        match py.detach(|| cap.inner.next(timeout)) {
            Ok(f) => Ok(PyFrame::from_frame(f)),
            Err(CaptureError::Stopped(None)) => Err(PyStopIteration::new_err(())),
            Err(e) => Err(capture_err(e)),
        }
    }
}

#[pymethods]
impl PyFrame {
    /// Write the frame as PNG. `level`: 0 (store) .. 9; 1 (default) is fast.
    /// `alpha=True` keeps the alpha channel of BGRA/RGBA frames.
    #[pyo3(signature = (path, level=png::DEFAULT_LEVEL as i64, alpha=false))]
    fn save_png(&self, py: Python<'_>, path: PathBuf, level: i64, alpha: bool) -> PyResult<()> {
        let level = u8::try_from(level)
            .ok()
            .filter(|l| *l <= 9)
            .ok_or_else(|| {
                PyValueError::new_err(format!("PNG level {level} is out of range (0..=9)"))
            })?;
        let frame = self.frame()?;
        py.detach(|| {
            let file = std::fs::File::create(&path).map_err(|e| {
                PyOSError::new_err((
                    e.raw_os_error().unwrap_or(0),
                    format!("cannot create {}: {e}", path.display()),
                ))
            })?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            png::write_png(&frame, &mut out, level, alpha).map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidInput => PyValueError::new_err(e.to_string()),
                _ => PyOSError::new_err((
                    e.raw_os_error().unwrap_or(0),
                    format!("cannot write {}: {e}", path.display()),
                )),
            })?;
            std::io::Write::flush(&mut out).map_err(|e| {
                PyOSError::new_err((
                    e.raw_os_error().unwrap_or(0),
                    format!("cannot write {}: {e}", path.display()),
                ))
            })
        })
    }
}

/// TEST ONLY: draw BGRA `data` at (left, top) on the root window of `display`.
#[pyfunction]
#[pyo3(signature = (display, left, top, width, height, data))]
fn _test_put_image(
    py: Python<'_>,
    display: Option<String>,
    left: i64,
    top: i64,
    width: i64,
    height: i64,
    data: Vec<u8>,
) -> PyResult<()> {
    let r = region_from_ints(left, top, width, height)?;
    py.detach(|| framebus_capture::testing::put_image(display.as_deref(), r, &data))
        .map_err(capture_err)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRegion>()?;
    m.add_class::<PyGrabber>()?;
    m.add_class::<PyCapture>()?;
    m.add_class::<CaptureFrames>()?;
    m.add_function(wrap_pyfunction!(grab, m)?)?;
    m.add_function(wrap_pyfunction!(_test_put_image, m)?)?;
    Ok(())
}

crate::context::closes_on_exit!(PyGrabber, close);
crate::context::closes_on_exit!(PyCapture, stop);
