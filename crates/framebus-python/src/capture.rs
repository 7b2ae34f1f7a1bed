//! Python face of framebus-capture: `framebus.grab`, `Grabber`, `Capture`,
//! `Region`, `Frame.save_png`, `Frame.damage`, and the test-only helpers
//! `_test_put_image`, `_test_copy_area`, `_test_window`.
//!
//! `Frame.damage` lives in a side table here, not in the frame: the core
//! `Frame` has no room for it and other producers have nothing to say. The
//! table is keyed by slot id (a slot holds one grab at a time; ids are never
//! reused) and each entry names the grab (seq, timestamp), so a frame whose
//! slot was since refilled by someone else reads None; entries go when their
//! slot is unmapped.
//!
//! Conversion, GIL release and error mapping only: region parsing turns
//! Python values into the crate's `Target`, `grab()` is one call to the
//! crate's shared grabber, and every wait for a frame goes through
//! `wait::wait` (GIL released, Ctrl-C honoured). Grabbers sit behind a mutex
//! that is only waited for with the GIL released.

use crate::args::{self, Int};
use crate::cuda::DeviceUpload;
use crate::errors::{os_error, Error, Result};
use crate::frame::PyFrame;
use crate::pool::{default_pool, pool_or_default, PyFramePool};
use crate::wait;
use framebus_capture::{
    grab_shared, BackendChoice, Capture, CaptureConfig, CaptureError, Grabber, Monitor,
    PortalOptions, Region, Target, MAX_BUFFER,
};
use framebus_core::{Frame, FramePool, PoolConfig};
use framebus_kernels::png;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::collections::HashMap;
use std::ops::ControlFlow::{Break, Continue};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One grab's damage, keyed by its slot id in [`DAMAGE`].
struct DamageEntry {
    seq: u64,
    timestamp_ns: u64,
    alive: Weak<()>,
    rects: Vec<Rect>,
}

/// A damage rectangle as Python sees it: (left, top, width, height).
type Rect = (i32, i32, u32, u32);

/// `Frame.damage` of captured frames (see the module comment).
static DAMAGE: Mutex<Option<HashMap<u64, DamageEntry>>> = Mutex::new(None);

/// Wrap `frame`, remembering its damage (None: not tracked). A frame
/// already registered (a repeat of `latest(allow_repeat=True)`) keeps its entry.
fn frame_with_damage(frame: Frame, damage: Option<&[Region]>) -> PyFrame {
    if let Some(rects) = damage {
        let mut table = lock(&DAMAGE);
        let table = table.get_or_insert_with(HashMap::new);
        table.retain(|_, e| e.alive.strong_count() > 0);
        let id = frame.lease().slot_id();
        let same = table
            .get(&id)
            .is_some_and(|e| e.seq == frame.seq() && e.timestamp_ns == frame.timestamp_ns());
        if !same {
            table.insert(
                id,
                DamageEntry {
                    seq: frame.seq(),
                    timestamp_ns: frame.timestamp_ns(),
                    alive: frame.lease().slot_liveness(),
                    rects: rects
                        .iter()
                        .map(|r| (r.left, r.top, r.width, r.height))
                        .collect(),
                },
            );
        }
    }
    PyFrame::from_frame(frame)
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

/// An int of a region as i64 (a value beyond i64 is off every screen anyway;
/// saturating keeps the crate's message, which names the whole region).
fn coord(v: Int) -> i64 {
    v.0.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[pymethods]
impl PyRegion {
    #[new]
    fn new(left: Int, top: Int, width: Int, height: Int) -> Result<Self> {
        let r = Region::checked(coord(left), coord(top), coord(width), coord(height))?;
        Ok(r.into())
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

/// Parse `region`: None, a monitor index, a `Region`, a dict with
/// left/top/width/height (mss style) or a 4-tuple box (left, top, right, bottom).
fn parse_target(obj: Option<&Bound<'_, PyAny>>) -> Result<Target> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(Target::Screen);
    };
    if let Ok(r) = obj.cast::<PyRegion>() {
        let r = r.get();
        return Ok(Target::Rect(Region::new(r.left, r.top, r.width, r.height)));
    }
    if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Err(Error::type_("region must not be a bool"));
    }
    if let Ok(i) = obj.extract::<Int>() {
        return Ok(Target::Monitor(args::count(
            "region (a monitor index)",
            i,
            0,
            u16::MAX as usize,
        )?));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let get = |k: &str| -> Result<i64> {
            match d.get_item(k)? {
                Some(v) => Ok(coord(v.extract::<Int>().map_err(|_| {
                    Error::type_(format!("region[{k:?}] must be an int, got {v}"))
                })?)),
                None => Err(Error::value(format!(
                    "region dict needs the keys left, top, width, height; {k:?} is missing"
                ))),
            }
        };
        let (l, t, w, h) = (get("left")?, get("top")?, get("width")?, get("height")?);
        return Ok(Target::Rect(Region::checked(l, t, w, h)?));
    }
    if obj.is_instance_of::<PyTuple>() || obj.is_instance_of::<PyList>() {
        let v: Vec<Int> = obj.extract().map_err(|_| {
            Error::type_("a region tuple must hold 4 ints (left, top, right, bottom)")
        })?;
        if let [l, t, r, b] = v[..] {
            return Ok(Target::Rect(Region::from_box(
                coord(l),
                coord(t),
                coord(r),
                coord(b),
            )?));
        }
        return Err(Error::value(format!(
            "a region tuple must be (left, top, right, bottom), got {} values",
            v.len()
        )));
    }
    Err(Error::type_(format!(
        "region must be None, a monitor index, a Region, a dict or a (left, top, right, bottom) tuple, not {}",
        obj.get_type().name()?
    )))
}

fn parse_backend(backend: &str) -> Result<BackendChoice> {
    Ok(backend.parse()?)
}

/// What to ask the ScreenCast portal for: `portal_source` ("monitor",
/// "window", "any"; None = monitors) and whether to keep the restore token.
fn portal_options(portal_source: Option<&str>, portal_restore: bool) -> Result<PortalOptions> {
    let opts = PortalOptions {
        restore: portal_restore,
        ..PortalOptions::default()
    };
    Ok(match portal_source {
        Some(s) => opts.with_sources(s)?,
        None => opts,
    })
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
        d.set_item("description", m.description)?;
        d.set_item("scale", m.scale)?;
        d.set_item("transform", m.transform)?;
        d.set_item("physical_width", m.physical.0)?;
        d.set_item("physical_height", m.physical.1)?;
        list.append(d)?;
    }
    Ok(list)
}

/// A reusable connection to a display (X11 or Wayland) that grabs into pool slots.
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
    ) -> Result<R> {
        py.detach(|| {
            let mut g = lock(&self.inner);
            let g = g.as_mut().ok_or_else(|| {
                CaptureError::Stopped(Some(format!(
                    "the grabber for {:?} is closed",
                    self.display
                )))
            })?;
            Ok(f(g)?)
        })
    }
}

#[pymethods]
impl PyGrabber {
    /// `display`: an X display when it contains ':' (":1"), else a Wayland
    /// socket (a name under $XDG_RUNTIME_DIR or a path); None: $WAYLAND_DISPLAY,
    /// else $DISPLAY. `backend`: "auto", "x11", "xshm", "xgetimage", "wayland",
    /// "ext-image-copy", "wlr-screencopy" or "portal" (docs/capture.md).
    /// `incremental=True`: copy only what changed since the slot's pixels
    /// were grabbed (XDamage), and give each frame its `damage`; without
    /// `pool=` such a grabber gets a private pool (other writers of a shared
    /// pool would force full grabs). `portal_source` ("monitor", "window",
    /// "any") is what the ScreenCast portal offers the user ("window" and
    /// "any" choose the portal under auto); `portal_restore=False` neither
    /// reads nor keeps the portal's restore token.
    #[new]
    #[pyo3(signature = (display=None, backend="auto", pool=None, incremental=false, portal_source=None, portal_restore=true))]
    fn new(
        py: Python<'_>,
        display: Option<String>,
        backend: &str,
        pool: Option<PyRef<'_, PyFramePool>>,
        incremental: bool,
        portal_source: Option<&str>,
        portal_restore: bool,
    ) -> Result<Self> {
        let choice = parse_backend(backend)?;
        let portal = portal_options(portal_source, portal_restore)?;
        let pool = match pool {
            Some(p) => p.pool.clone(),
            None if incremental => FramePool::default(),
            None => pool_or_default(None)?,
        };
        // Opening may wait long (the portal asks the user): on a watched
        // thread, so Ctrl-C still raises.
        let g = wait::run_watched(py, "opening a grabber", move || {
            let mut g = Grabber::open_with(display.as_deref(), choice, pool, &portal)?;
            if incremental {
                g.track_damage(true)?;
            }
            Ok(g)
        })?;
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
    ) -> Result<PyFrame> {
        let target = parse_target(region)?;
        let pool = pool_of(pool);
        let (frame, damage) = self.with(py, |g| {
            let r = target.resolve(g)?;
            let f = g.grab(r, cursor, pool.as_ref())?;
            Ok((f, g.last_damage().map(<[Region]>::to_vec)))
        })?;
        Ok(frame_with_damage(frame, damage.as_deref()))
    }

    /// True when grabs copy only what changed (`incremental=True`).
    #[getter]
    fn incremental(&self, py: Python<'_>) -> Result<bool> {
        self.with(py, |g| Ok(g.is_incremental()))
    }

    /// (partial, full): grabs that copied only changed rows, and whole grabs
    /// (counted while incremental).
    #[getter]
    fn grab_counts(&self, py: Python<'_>) -> Result<(u64, u64)> {
        self.with(py, |g| Ok(g.grab_counts()))
    }

    /// Monitors now: index 0 = the whole screen, then each RandR monitor.
    #[getter]
    fn monitors<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyList>> {
        let m = self.with(py, |g| g.monitors())?;
        Ok(monitors_to_py(py, m)?)
    }

    /// (width, height) of the screen now.
    #[getter]
    fn screen_size(&self, py: Python<'_>) -> Result<(u32, u32)> {
        self.with(py, |g| g.screen_size())
    }

    /// "xshm" or "xgetimage".
    #[getter]
    fn backend(&self, py: Python<'_>) -> Result<&'static str> {
        self.with(py, |g| Ok(g.backend().name()))
    }

    /// Why the backend is not MIT-SHM (None while it is).
    #[getter]
    fn backend_reason(&self, py: Python<'_>) -> Result<Option<String>> {
        self.with(py, |g| Ok(g.backend_reason().map(str::to_owned)))
    }

    #[getter]
    fn display(&self) -> &str {
        &self.display
    }

    /// MIT-SHM segments attached now (one per live pool slot grabbed into).
    #[getter]
    fn attached_segments(&self, py: Python<'_>) -> Result<usize> {
        self.with(py, |g| Ok(g.attached_segments()))
    }

    /// Close the X connection; frames already grabbed stay valid.
    fn close(&self, py: Python<'_>) {
        let g = py.detach(|| lock(&self.inner).take());
        drop(g);
    }

    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        py.detach(|| lock(&self.inner).is_none())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let backend = py.detach(|| lock(&self.inner).as_ref().map(|g| g.backend().name()));
        match backend {
            Some(b) => format!("Grabber(display={:?}, backend={b:?})", self.display),
            None => format!("Grabber(display={:?}, closed)", self.display),
        }
    }
}

/// Grab the screen (or a monitor or region) once, into `pool` (default pool).
/// One connection is kept for the whole process (to the display last
/// grabbed) so the next call is fast; `close_shared_grab()` closes it.
#[pyfunction]
#[pyo3(signature = (region=None, cursor=false, pool=None, display=None))]
fn grab(
    py: Python<'_>,
    region: Option<&Bound<'_, PyAny>>,
    cursor: bool,
    pool: Option<PyRef<'_, PyFramePool>>,
    display: Option<String>,
) -> Result<PyFrame> {
    let target = parse_target(region)?;
    let pool = pool_of(pool);
    let default = default_pool()?;
    let frame =
        py.detach(|| grab_shared(display.as_deref(), target, cursor, pool.as_ref(), default))?;
    Ok(PyFrame::from_frame(frame))
}

/// Close the connection `grab()` keeps (and what it holds: X server
/// segments, or a compositor's buffers — default-pool slots on Wayland);
/// frames already grabbed stay valid, the next `grab()` reconnects.
#[pyfunction]
fn close_shared_grab(py: Python<'_>) {
    py.detach(framebus_capture::close_shared);
}

/// Continuous capture on a Rust thread into pool slots.
#[pyclass(name = "Capture", module = "framebus", frozen)]
pub struct PyCapture {
    inner: Capture,
    pool: FramePool,
    own_pool: bool,
    /// `device=`: each frame is uploaded as it is taken.
    upload: Option<DeviceUpload>,
}

impl PyCapture {
    /// Wait for a frame with `take(slice)` (the crate's latest/next), in
    /// Ctrl-C-interruptible slices; `timeout` None waits forever.
    fn wait_frame(
        &self,
        py: Python<'_>,
        timeout: Option<Duration>,
        take: impl Fn(&Capture, Duration) -> framebus_capture::Result<Damaged> + Send + Sync,
    ) -> Result<PyFrame> {
        let cap = &self.inner;
        wait::wait(
            py,
            timeout,
            |slice| match take(cap, slice) {
                Err(CaptureError::Timeout(_)) => Ok(Continue(())),
                r => r.map(Break),
            },
            |waited, ()| Error::Capture(CaptureError::Timeout(waited.as_secs_f64())),
        )
        .map(|(f, d)| frame_with_damage(f, d.as_deref()))
    }

    /// A frame as the caller gets it (uploaded with `device=`).
    fn deliver(&self, py: Python<'_>, frame: PyFrame) -> Result<Py<PyAny>> {
        crate::cuda::deliver(py, self.upload.as_ref(), frame)
    }
}

/// A frame and its damage, as the crate's `*_with_damage` return them.
type Damaged = (Frame, Option<Vec<Region>>);

#[pymethods]
impl PyCapture {
    /// Start capturing `region` at `target_fps`, keeping at most `buffer`
    /// unseen frames (older ones are dropped). `target_fps=None` captures on
    /// demand: the next grab starts when the consumer takes the last frame.
    /// `incremental=True` copies only what changed (XDamage); `on_change=True`
    /// delivers a frame only when something in the region changed. With
    /// either, frames carry `damage` (changes since the frame handed out before).
    /// `portal_source`, `portal_restore`: as for `Grabber`.
    ///
    /// `device="cuda:0"` delivers frames on the GPU: grabs go into pinned
    /// slots (a `FramePool(pinned=device)` unless `pool=` is given), each
    /// frame taken is queued for upload on a framebus stream (so the next
    /// grab overlaps the copy) and `latest()`/`next()`/`frames()` return
    /// `CudaFrame`s; `format`, `size`, `method`, `mean`, `std`, `matrix`,
    /// `range`, `stream` and `device_pool` (its `pool`) are `Frame.to_device`'s.
    #[new]
    #[pyo3(
        signature = (region=None, target_fps=Some(60.0), buffer=Int(3), pool=None, cursor=false, display=None, backend="auto", incremental=false, on_change=false, portal_source=None, portal_restore=true, device=None, **upload),
        text_signature = "(region=None, target_fps=60.0, buffer=3, pool=None, cursor=False, display=None, backend='auto', incremental=False, on_change=False, portal_source=None, portal_restore=True, device=None, **upload)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        region: Option<&Bound<'_, PyAny>>,
        target_fps: Option<f64>,
        buffer: Int,
        pool: Option<PyRef<'_, PyFramePool>>,
        cursor: bool,
        display: Option<String>,
        backend: &str,
        incremental: bool,
        on_change: bool,
        portal_source: Option<&str>,
        portal_restore: bool,
        device: Option<&Bound<'_, PyAny>>,
        upload: Option<&Bound<'_, PyDict>>,
    ) -> Result<Self> {
        let upload = DeviceUpload::from_kwargs("Capture", device, upload)?;
        let target = parse_target(region)?;
        let choice = parse_backend(backend)?;
        let portal = portal_options(portal_source, portal_restore)?;
        let config = CaptureConfig {
            region: None,
            target_fps,
            buffer: args::count("buffer", buffer, 1, MAX_BUFFER)?,
            cursor,
        };
        config.validate()?; // before connecting: bad arguments say so first
        let own_pool = pool.is_none();
        // A private pool by default, so stop() can give its memory back;
        // pinned for the device when frames go there.
        let pool = match (pool_of(pool), &upload) {
            (Some(p), _) => p,
            (None, None) => FramePool::default(),
            (None, Some(up)) => FramePool::with_hook(PoolConfig::default(), up.pin_hook()?),
        };
        let thread_pool = pool.clone();
        let inner = wait::run_watched(py, "starting a capture", move || {
            let mut g = Grabber::open_with(display.as_deref(), choice, thread_pool, &portal)?;
            let region = target.resolve(&mut g)?;
            if incremental {
                g.track_damage(true)?;
            }
            let config = CaptureConfig { region, ..config };
            Ok(if on_change {
                Capture::start_on_change(g, config)?
            } else {
                Capture::start(g, config)?
            })
        })?;
        Ok(PyCapture {
            inner,
            pool,
            own_pool,
            upload,
        })
    }

    /// The newest frame not returned before, waiting up to `timeout` seconds
    /// (None = forever; Ctrl-C honoured). `allow_repeat=True` returns the last
    /// frame at once even if it was returned already. Raises TimeoutError, or
    /// CaptureError once stopped or failed.
    #[pyo3(signature = (timeout=None, allow_repeat=false))]
    fn latest(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        allow_repeat: bool,
    ) -> Result<Py<PyAny>> {
        let timeout = args::timeout("timeout", timeout)?;
        let f = self.wait_frame(py, timeout, |c, slice| {
            c.latest_with_damage(Some(slice), allow_repeat)
        })?;
        self.deliver(py, f)
    }

    /// The oldest frame not returned before (every frame the buffer kept, in order).
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> Result<Py<PyAny>> {
        let timeout = args::timeout("timeout", timeout)?;
        let f = self.wait_frame(py, timeout, |c, slice| c.next_with_damage(Some(slice)))?;
        self.deliver(py, f)
    }

    /// Iterate over frames in order until `stop()` (or `timeout` without a frame).
    #[pyo3(signature = (timeout=None))]
    fn frames(slf: Py<Self>, timeout: Option<f64>) -> Result<CaptureFrames> {
        Ok(CaptureFrames {
            capture: slf,
            timeout: args::timeout("timeout", timeout)?,
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
        d.set_item("unchanged", s.unchanged)?;
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
    timeout: Option<Duration>,
}

#[pymethods]
impl CaptureFrames {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let cap = self.capture.get();
        match cap.wait_frame(py, self.timeout, |c, slice| c.next_with_damage(Some(slice))) {
            Ok(f) => Ok(cap.deliver(py, f)?),
            Err(Error::Capture(CaptureError::Stopped(None))) => Err(PyStopIteration::new_err(())),
            Err(e) => Err(e.into()),
        }
    }
}

#[pymethods]
impl PyFrame {
    /// The rectangles `(left, top, width, height)` (frame coordinates) that
    /// changed since the previous frame of the incremental / on-change
    /// `Grabber` or `Capture` that made this frame: a superset of the pixels
    /// that differ. None for frames from anywhere else.
    #[getter]
    fn damage(&self) -> PyResult<Option<Vec<Rect>>> {
        let f = self.frame()?;
        let table = lock(&DAMAGE);
        Ok(table
            .as_ref()
            .and_then(|t| t.get(&f.lease().slot_id()))
            .filter(|e| e.seq == f.seq() && e.timestamp_ns == f.timestamp_ns())
            .map(|e| e.rects.clone()))
    }

    /// Write the frame as PNG. `level`: 0 (store) .. 9; 1 (default) is fast.
    /// `alpha=True` keeps the alpha channel of BGRA/RGBA frames.
    #[pyo3(signature = (path, level=Int(png::DEFAULT_LEVEL as i128), alpha=false))]
    fn save_png(&self, py: Python<'_>, path: PathBuf, level: Int, alpha: bool) -> Result<()> {
        let level = args::count("level", level, 0, 9)? as u8;
        let frame = self.frame()?;
        let io_err = |what: &str, e: std::io::Error| match e.kind() {
            std::io::ErrorKind::InvalidInput => Error::value(e.to_string()),
            _ => Error::Py(os_error(
                e.raw_os_error(),
                format!("cannot {what} {}: {e}", path.display()),
            )),
        };
        py.detach(|| {
            let file = std::fs::File::create(&path).map_err(|e| io_err("create", e))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            png::write_png(&frame, &mut out, level, alpha).map_err(|e| io_err("write", e))?;
            std::io::Write::flush(&mut out).map_err(|e| io_err("write", e))
        })
    }
}

/// TEST ONLY: draw BGRA `data` at (left, top) on the root window of `display`.
#[pyfunction]
#[pyo3(signature = (display, left, top, width, height, data))]
fn _test_put_image(
    py: Python<'_>,
    display: Option<String>,
    left: Int,
    top: Int,
    width: Int,
    height: Int,
    data: Vec<u8>,
) -> Result<()> {
    let r = Region::checked(coord(left), coord(top), coord(width), coord(height))?;
    Ok(py.detach(|| framebus_capture::testing::put_image(display.as_deref(), r, &data))?)
}

/// TEST ONLY: copy the screen area (left, top, width, height) to (to_left, to_top).
#[pyfunction]
#[pyo3(signature = (display, left, top, width, height, to_left, to_top))]
#[allow(clippy::too_many_arguments)]
fn _test_copy_area(
    py: Python<'_>,
    display: Option<String>,
    left: Int,
    top: Int,
    width: Int,
    height: Int,
    to_left: i32,
    to_top: i32,
) -> Result<()> {
    let r = Region::checked(coord(left), coord(top), coord(width), coord(height))?;
    Ok(py.detach(|| framebus_capture::testing::copy_area(display.as_deref(), r, to_left, to_top))?)
}

/// TEST ONLY: create (`window=None`; returns its id), move/resize, or
/// (`destroy=True`) destroy a plain window with background 0xRRGGBB.
#[pyfunction]
#[pyo3(signature = (display, window, left, top, width, height, background=0, destroy=false))]
#[allow(clippy::too_many_arguments)]
fn _test_window(
    py: Python<'_>,
    display: Option<String>,
    window: Option<u32>,
    left: Int,
    top: Int,
    width: Int,
    height: Int,
    background: u32,
    destroy: bool,
) -> Result<u32> {
    let r = Region::checked(coord(left), coord(top), coord(width), coord(height))?;
    Ok(py.detach(|| {
        framebus_capture::testing::window(display.as_deref(), window, r, background, destroy)
    })?)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRegion>()?;
    m.add_class::<PyGrabber>()?;
    m.add_class::<PyCapture>()?;
    m.add_class::<CaptureFrames>()?;
    m.add_function(wrap_pyfunction!(grab, m)?)?;
    m.add_function(wrap_pyfunction!(close_shared_grab, m)?)?;
    m.add_function(wrap_pyfunction!(_test_put_image, m)?)?;
    m.add_function(wrap_pyfunction!(_test_copy_area, m)?)?;
    m.add_function(wrap_pyfunction!(_test_window, m)?)?;
    Ok(())
}

crate::context::closes_on_exit!(PyGrabber, close);
crate::context::closes_on_exit!(PyCapture, stop);
