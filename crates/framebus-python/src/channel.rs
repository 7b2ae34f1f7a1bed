//! `framebus.Publisher` / `framebus.Subscriber`: Python face of framebus-channel.
//!
//! Conversion, GIL handling and error mapping only. Every call that can block
//! (send on a full lossless queue, recv, connect, close) waits in `py.detach`;
//! `recv` waits in 100 ms slices with a signal check between, so Ctrl-C works.
//! The hot paths keep the GIL when they cannot block (a send with room, a
//! frame already waiting, `try_recv`, a spin while no other Python thread
//! exists): handing the GIL over and back is a good part of a cold hand-off.
//! The subscriber's mutex is only ever *waited for* with the GIL released;
//! with the GIL held it is only `try_lock`ed (falling back to the released
//! path), so a thread blocked in `recv` cannot deadlock a thread reading
//! `sub.skipped`.

use crate::errors::{to_pyerr, ChannelClosed, FramebusError};
use crate::frame::PyFrame;
use crate::pool::{check_size, parse_format, parse_timeout, PyFramePool};
use framebus_channel::{
    ChannelError, Mode, OnFull, Publisher, PublisherConfig, Spin, Subscriber, WaitStep,
};
use framebus_core::Frame;
use pyo3::create_exception;
use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyOSError, PyPermissionError, PyStopIteration,
    PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

create_exception!(
    framebus,
    ChannelFull,
    FramebusError,
    "A lossless channel's subscriber queue is full (on_full=\"raise\", or the block timed out)."
);

/// Map a channel error to its Python exception, once.
fn channel_err(e: ChannelError) -> PyErr {
    let msg = e.to_string();
    match e {
        ChannelError::InvalidName { .. } | ChannelError::InvalidArgument { .. } => {
            PyValueError::new_err(msg)
        }
        ChannelError::NameInUse(_) => PyFileExistsError::new_err(msg),
        ChannelError::NotFound { .. } => PyFileNotFoundError::new_err(msg),
        ChannelError::Closed(_) => ChannelClosed::new_err(msg),
        ChannelError::Timeout(..) => PyTimeoutError::new_err(msg),
        ChannelError::Full { .. } => ChannelFull::new_err(msg),
        ChannelError::WrongUser { .. } => PyPermissionError::new_err(msg),
        ChannelError::Corrupt(_) | ChannelError::TooManySlots { .. } => FramebusError::new_err(msg),
        ChannelError::Core(c) => to_pyerr(c),
        ChannelError::Os { source, .. } => match source.raw_os_error() {
            Some(code) => PyOSError::new_err((code, msg)),
            None => PyOSError::new_err(msg),
        },
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Latest => "latest",
        Mode::Lossless { .. } => "lossless",
    }
}

/// The sending end of a channel: `Publisher("cam0", mode="latest")`.
#[pyclass(name = "Publisher", module = "framebus", frozen)]
pub struct PyPublisher {
    inner: Publisher,
    on_full: OnFull,
}

#[pymethods]
impl PyPublisher {
    /// `mode`: "latest" (each subscriber gets the newest frame it has not seen)
    /// or "lossless" (every frame, in order, through a queue of `depth`, default
    /// 4). Lossless `on_full`: "block" (wait up to `timeout` s, None = forever)
    /// or "raise" (`ChannelFull` at once). `pool`: the FramePool `acquire` uses
    /// (default: a new one). `max_slots`: distinct slots in flight at once.
    #[new]
    #[allow(clippy::too_many_arguments)] // mirrors the Python keyword arguments
    #[pyo3(signature = (name, mode="latest", depth=None, on_full="block", timeout=None, pool=None, max_slots=64))]
    fn new(
        py: Python<'_>,
        name: &str,
        mode: &str,
        depth: Option<i64>,
        on_full: &str,
        timeout: Option<f64>,
        pool: Option<PyRef<'_, PyFramePool>>,
        max_slots: i64,
    ) -> PyResult<Self> {
        let mode = match (mode, depth) {
            ("latest", None) => Mode::Latest,
            ("latest", Some(d)) => {
                return Err(PyValueError::new_err(format!(
                    "depth={d} only applies to mode=\"lossless\""
                )))
            }
            ("lossless", d) => {
                let d = d.unwrap_or(4);
                if !(1..=256).contains(&d) {
                    return Err(PyValueError::new_err(format!(
                        "invalid depth: {d} (must be 1..=256)"
                    )));
                }
                Mode::Lossless { depth: d as u32 }
            }
            (m, _) => {
                return Err(PyValueError::new_err(format!(
                    "invalid mode {m:?}: expected \"latest\" or \"lossless\""
                )))
            }
        };
        let on_full = match on_full {
            "block" => OnFull::Block(parse_timeout(timeout)?),
            "raise" => OnFull::Raise,
            o => {
                return Err(PyValueError::new_err(format!(
                    "invalid on_full {o:?}: expected \"block\" or \"raise\""
                )))
            }
        };
        if !(1..=4096).contains(&max_slots) {
            return Err(PyValueError::new_err(format!(
                "invalid max_slots: {max_slots} (must be 1..=4096)"
            )));
        }
        let cfg = PublisherConfig {
            mode,
            on_full,
            max_slots: max_slots as u32,
            pool: pool.map(|p| p.pool.clone()),
            ..PublisherConfig::default()
        };
        let inner = py
            .detach(|| Publisher::new(name, cfg))
            .map_err(channel_err)?;
        Ok(PyPublisher { inner, on_full })
    }

    /// A writable frame from the publisher's pool: fill it, then `send` it.
    #[pyo3(signature = (width, height, format="BGRA"))]
    fn acquire(&self, py: Python<'_>, width: i64, height: i64, format: &str) -> PyResult<PyFrame> {
        let (w, h) = (check_size("width", width)?, check_size("height", height)?);
        let fmt = parse_format(format)?;
        let p = &self.inner;
        let f = py.detach(|| p.acquire(w, h, fmt)).map_err(channel_err)?;
        Ok(PyFrame::from_frame(f))
    }

    /// Publish any framebus Frame without copying it; returns its sequence
    /// number in the channel. Do not write into the frame afterwards:
    /// subscribers may be reading it (acquire a new one for the next image).
    fn send(&self, py: Python<'_>, frame: PyRef<'_, PyFrame>) -> PyResult<u64> {
        let f = frame.frame()?;
        drop(frame);
        let p = &self.inner;
        // Fast path, GIL held: a send that need not wait (room in every
        // queue, no other sender) skips releasing and re-taking the GIL,
        // whose code is a good part of a cold send's cache misses.
        if let Some(ticket) = p.try_send(&f).map_err(channel_err)? {
            return Ok(ticket);
        }
        let OnFull::Block(timeout) = self.on_full else {
            return py.detach(|| p.send(&f)).map_err(channel_err);
        };
        // Wait for room in 100 ms slices with a signal check between (Ctrl-C).
        const SLICE: Duration = Duration::from_millis(100);
        let start = Instant::now();
        loop {
            let slice = timeout.map_or(SLICE, |t| t.saturating_sub(start.elapsed()).min(SLICE));
            match py.detach(|| p.send_with(&f, OnFull::Block(Some(slice)))) {
                Err(ChannelError::Full { .. }) if timeout.is_none_or(|t| start.elapsed() < t) => {
                    py.check_signals()?;
                }
                Err(ChannelError::Full {
                    name,
                    subscriber,
                    depth,
                    ..
                }) => {
                    return Err(channel_err(ChannelError::Full {
                        name,
                        subscriber,
                        depth,
                        waited: Some(start.elapsed()),
                    }))
                }
                r => return r.map_err(channel_err),
            }
        }
    }

    /// The FramePool `acquire` takes frames from (share it with a capture).
    #[getter]
    fn pool(&self) -> PyFramePool {
        PyFramePool {
            pool: self.inner.pool().clone(),
        }
    }

    /// Subscribers connected and receiving.
    #[getter]
    fn subscribers(&self) -> usize {
        self.inner.subscribers()
    }

    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    #[getter]
    fn mode(&self) -> &'static str {
        mode_name(self.inner.mode())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Block (GIL released) until `n` subscribers are connected; returns the count.
    #[pyo3(signature = (n=1, timeout=5.0))]
    fn wait_for_subscribers(&self, py: Python<'_>, n: usize, timeout: f64) -> PyResult<usize> {
        let t = parse_timeout(Some(timeout))?.unwrap_or_default();
        let p = &self.inner;
        py.detach(|| p.wait_for_subscribers(n, t))
            .map_err(channel_err)
    }

    /// Counters: subscribers, sent, replaced (latest mode), disconnected, pins, pinned_slots.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("subscribers", s.subscribers)?;
        d.set_item("sent", s.sent)?;
        d.set_item("replaced", s.replaced)?;
        d.set_item("disconnected", s.disconnected)?;
        d.set_item("pins", s.pins)?;
        d.set_item("pinned_slots", s.pinned_slots)?;
        Ok(d)
    }

    /// Stop publishing and free the name. Subscribers get frames already sent,
    /// then `ChannelClosed`; slots they hold stay pinned until they release them.
    fn close(&self, py: Python<'_>) {
        let p = &self.inner;
        py.detach(|| p.close())
    }

    fn __repr__(&self) -> String {
        let s = self.inner.stats();
        format!(
            "Publisher(name={:?}, mode={:?}, subscribers={}, sent={}, closed={})",
            self.inner.name(),
            mode_name(self.inner.mode()),
            s.subscribers,
            s.sent,
            self.inner.is_closed()
        )
    }
}

/// The receiving end of a channel: `Subscriber("cam0", timeout=5.0)`.
#[pyclass(name = "Subscriber", module = "framebus", frozen)]
pub struct PySubscriber {
    inner: Mutex<Subscriber>,
    name: String,
    mode: Mode,
}

impl PySubscriber {
    /// Run `f` on the subscriber with the GIL released (see the module docs).
    fn with<R: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut Subscriber) -> R + Send) -> R {
        py.detach(|| f(&mut self.lock()))
    }

    /// Run `f`, which must not block, on the subscriber: with the GIL held
    /// when no other thread is using the subscriber (no GIL hand-over on the
    /// hot path of a polling loop), else like [`PySubscriber::with`].
    fn with_now<R: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut Subscriber) -> R + Send) -> R {
        match self.inner.try_lock() {
            Ok(mut s) => f(&mut s),
            Err(TryLockError::Poisoned(e)) => f(&mut e.into_inner()),
            Err(TryLockError::WouldBlock) => self.with(py, f),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Subscriber> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `recv` in slices of at most 100 ms, checking for signals in between, so
    /// Ctrl-C interrupts a long wait (the GIL is released inside each slice).
    fn recv_interruptible(
        &self,
        py: Python<'_>,
        timeout: Option<Duration>,
    ) -> Result<Frame, RecvError> {
        // A frame already waiting is taken without a GIL hand-over.
        if let Some(f) = self
            .with_now(py, |s| s.try_recv())
            .map_err(RecvError::Channel)?
        {
            return Ok(f);
        }
        // The whole call is one wait: a spin=seconds budget counts from here,
        // not from each 100 ms slice.
        let started = Instant::now();
        let deadline = timeout.map(|t| started + t);
        if let Some(f) = self.wait_holding_gil(py, started, deadline)? {
            return Ok(f);
        }
        const SLICE: Duration = Duration::from_millis(100);
        loop {
            let slice = deadline.map_or(SLICE, |d| {
                d.saturating_duration_since(Instant::now()).min(SLICE)
            });
            let recv = |s: &mut Subscriber| s.recv_since(Some(slice), started);
            match self.with(py, recv) {
                Err(ChannelError::Timeout(..)) if deadline.is_none_or(|d| Instant::now() < d) => {
                    py.check_signals().map_err(RecvError::Py)?;
                }
                Err(ChannelError::Timeout(..)) => {
                    return Err(RecvError::Channel(ChannelError::Timeout(
                        timeout.unwrap_or_default(),
                        "a frame",
                    )))
                }
                r => return r.map_err(RecvError::Channel),
            }
        }
    }

    /// The spinning part of a wait, with the GIL held, while this is the only
    /// Python thread; `Ok(None)` when it is over (or cannot run) and the
    /// caller should wait as usual.
    ///
    /// Spinning in Rust with the GIL released means the frame, once it comes,
    /// waits for the GIL hand-back (`PyEval_RestoreThread`, cold by then): on
    /// the CI VM send→recv p50 was ~6 µs higher than a Python `try_recv` loop.
    /// Holding the GIL costs nobody anything while no other Python thread
    /// exists; it is still handed over (and signals checked) every millisecond
    /// so a thread started meanwhile runs, and with other threads present the
    /// spin stays in Rust with the GIL released.
    ///
    /// Each step is [`Subscriber::wait_step`]'s answer, the policy `recv`
    /// follows too: spin with the GIL held, nap with it released
    /// (`spin="auto"` before the next frame is due), or hand back to `recv`.
    fn wait_holding_gil(
        &self,
        py: Python<'_>,
        started: Instant,
        deadline: Option<Instant>,
    ) -> Result<Option<Frame>, RecvError> {
        if !only_python_thread(py) {
            return Ok(None);
        }
        let cap = |t: Instant| deadline.map_or(t, |d| d.min(t));
        loop {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None); // out of time: recv says so
            }
            match self.with_now(py, |s| s.wait_step(started)) {
                WaitStep::Sleep => return Ok(None),
                WaitStep::Spin(until) => return self.spin_with_gil_until(py, cap(until)),
                WaitStep::Nap(nap) => {
                    // In slices, for Ctrl-C; a frame that comes early ends it.
                    let nap = cap(now + nap.min(Duration::from_millis(100))) - now;
                    match self.with(py, |s| s.recv_since(Some(nap), started)) {
                        Ok(f) => return Ok(Some(f)),
                        Err(ChannelError::Timeout(..)) => {
                            py.check_signals().map_err(RecvError::Py)?;
                        }
                        Err(e) => return Err(RecvError::Channel(e)),
                    }
                }
            }
        }
    }

    /// Busy-wait for a frame until `until` with the GIL held (one atomic load
    /// per poll), handing the GIL over and checking signals every ms.
    fn spin_with_gil_until(
        &self,
        py: Python<'_>,
        until: Instant,
    ) -> Result<Option<Frame>, RecvError> {
        const HAND_OVER: Duration = Duration::from_millis(1);
        let Ok(mut s) = self.inner.try_lock() else {
            return Ok(None);
        };
        let mut handed_over = Instant::now();
        let mut polls = 0u32;
        loop {
            if s.has_pending() {
                if let Some(f) = s.try_recv().map_err(RecvError::Channel)? {
                    return Ok(Some(f));
                }
            }
            polls = polls.wrapping_add(1);
            if !polls.is_multiple_of(256) {
                continue;
            }
            let now = Instant::now();
            if now >= until {
                return Ok(None);
            }
            if now >= handed_over + HAND_OVER {
                handed_over = now;
                drop(s);
                py.check_signals().map_err(RecvError::Py)?;
                py.detach(|| ());
                s = match self.inner.try_lock() {
                    Ok(s) => s,
                    Err(_) => return Ok(None), // another thread took it: wait as usual
                };
                if s.is_closed() {
                    // closed by a signal handler: stop spinning, let recv say so
                    return Ok(None);
                }
            }
        }
    }
}

/// No Python thread but the caller's exists (checked with the GIL held).
fn only_python_thread(_py: Python<'_>) -> bool {
    // SAFETY: the GIL is held (the `Python` token), which is what these
    // calls require; the thread list cannot change while we hold it, and we
    // only compare pointers.
    unsafe {
        let interp = pyo3::ffi::PyInterpreterState_Get();
        let head = pyo3::ffi::PyInterpreterState_ThreadHead(interp);
        !head.is_null() && pyo3::ffi::PyThreadState_Next(head).is_null()
    }
}

/// Why an interruptible receive stopped.
enum RecvError {
    Channel(ChannelError),
    Py(PyErr),
}

impl From<RecvError> for PyErr {
    fn from(e: RecvError) -> PyErr {
        match e {
            RecvError::Channel(c) => channel_err(c),
            RecvError::Py(p) => p,
        }
    }
}

/// `Subscriber(spin=...)`: seconds, or a policy by name ("auto").
#[derive(FromPyObject)]
enum SpinArg {
    Seconds(f64),
    Name(String),
}

#[pymethods]
impl PySubscriber {
    /// Connect to channel `name`, waiting up to `timeout` seconds for its
    /// publisher to appear (0 = try once; raises FileNotFoundError). `spin`:
    /// seconds each `recv` busy-waits before sleeping (lower wake-up latency
    /// for a CPU core; default 0; the GIL stays held while no other Python
    /// thread exists, handed over every ms), or "auto": sleep until shortly
    /// before the next frame is due (learnt from the publisher's send times),
    /// spin only then.
    #[new]
    #[pyo3(
        signature = (name, timeout=0.0, spin=SpinArg::Seconds(0.0)),
        text_signature = "(name, timeout=0.0, spin=0.0)"
    )]
    fn new(py: Python<'_>, name: &str, timeout: f64, spin: SpinArg) -> PyResult<Self> {
        let t = parse_timeout(Some(timeout))?.unwrap_or_default();
        let spin = match spin {
            SpinArg::Name(s) if s == "auto" => Spin::Adaptive,
            SpinArg::Name(s) => {
                return Err(PyValueError::new_err(format!(
                    "invalid spin: {s:?} (seconds >= 0, or \"auto\")"
                )))
            }
            SpinArg::Seconds(x) => match parse_timeout(Some(x)) {
                Ok(Some(d)) if !d.is_zero() => Spin::For(d),
                Ok(_) => Spin::Off,
                Err(_) => {
                    return Err(PyValueError::new_err(format!(
                        "invalid spin: {x} (seconds >= 0, or \"auto\")"
                    )))
                }
            },
        };
        let mut sub = py
            .detach(|| Subscriber::connect(name, t))
            .map_err(channel_err)?;
        sub.set_spin(spin);
        Ok(PySubscriber {
            mode: sub.mode(),
            name: name.to_owned(),
            inner: Mutex::new(sub),
        })
    }

    /// The next frame (latest mode: the newest not seen yet), zero-copy and
    /// read-only, pinned until released. Waits up to `timeout` seconds (None =
    /// forever) with the GIL released; raises TimeoutError, or ChannelClosed
    /// once the publisher closed or died and every queued frame was received.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PyFrame> {
        let t = parse_timeout(timeout)?;
        Ok(PyFrame::from_frame(self.recv_interruptible(py, t)?))
    }

    /// A frame if one is ready now, else None; ChannelClosed once the publisher
    /// closed or died and nothing is left queued.
    fn try_recv(&self, py: Python<'_>) -> PyResult<Option<PyFrame>> {
        let f = self.with_now(py, |s| s.try_recv()).map_err(channel_err)?;
        Ok(f.map(PyFrame::from_frame))
    }

    /// The publisher's send period in seconds as learnt from received frames
    /// (what spin="auto" paces itself by); None until two came at a steady rate.
    #[getter]
    fn send_period(&self, py: Python<'_>) -> Option<f64> {
        self.with_now(py, |s| s.send_period())
            .map(|d| d.as_secs_f64())
    }

    /// Latest mode: frames replaced by newer ones before this subscriber took them.
    #[getter]
    fn skipped(&self, py: Python<'_>) -> u64 {
        self.with_now(py, |s| s.skipped())
    }

    #[getter]
    fn received(&self, py: Python<'_>) -> u64 {
        self.with_now(py, |s| s.received())
    }

    /// Received frames still held (pinned) by this process.
    #[getter]
    fn held(&self, py: Python<'_>) -> usize {
        self.with_now(py, |s| s.held())
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    #[getter]
    fn mode(&self) -> &'static str {
        mode_name(self.mode)
    }

    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        self.with(py, |s| s.is_closed())
    }

    /// Stop receiving; frames already received stay valid until released.
    fn close(&self, py: Python<'_>) {
        self.with(py, |s| s.close())
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// `for frame in sub:` waits for each frame and ends when the channel closes.
    fn __next__(&self, py: Python<'_>) -> PyResult<PyFrame> {
        match self.recv_interruptible(py, None) {
            Ok(f) => Ok(PyFrame::from_frame(f)),
            Err(RecvError::Channel(ChannelError::Closed(_))) => Err(PyStopIteration::new_err(())),
            Err(e) => Err(e.into()),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let (r, k, c) = self.with(py, |s| (s.received(), s.skipped(), s.is_closed()));
        format!(
            "Subscriber(name={:?}, mode={:?}, received={r}, skipped={k}, closed={c})",
            self.name,
            mode_name(self.mode)
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPublisher>()?;
    m.add_class::<PySubscriber>()?;
    m.add("ChannelFull", m.py().get_type::<ChannelFull>())?;
    Ok(())
}

crate::context::closes_on_exit!(PyPublisher, close);
crate::context::closes_on_exit!(PySubscriber, close);
