//! `framebus.Publisher` / `framebus.Subscriber`: Python face of framebus-channel.
//!
//! Conversion, GIL handling and error mapping only. Every call that can block
//! (send on a full lossless queue, recv, connect, wait_for_subscribers) waits
//! through `wait::wait`: 100 ms slices with the GIL released and a signal
//! check between, so Ctrl-C works whatever the timeout.
//! The hot paths keep the GIL when they cannot block (a send with room, a
//! frame already waiting, `try_recv`, a spin while no other Python thread
//! exists): handing the GIL over and back is a good part of a cold hand-off.
//! The subscriber's mutex is only ever *waited for* with the GIL released;
//! with the GIL held it is only `try_lock`ed (falling back to the released
//! path), so a thread blocked in `recv` cannot deadlock a thread reading
//! `sub.skipped`. The getters never wait at all: they read a snapshot of the
//! counters, refreshed by every call that holds the subscriber (and by the
//! getter itself when nobody does).

use crate::args::{self, Int};
use crate::cuda::{deliver, DeviceUpload};
use crate::errors::{Error, Result};
use crate::frame::PyFrame;
use crate::pool::PyFramePool;
use crate::wait;
use framebus_channel::{
    ChannelError, Mode, OnFull, Publisher, PublisherConfig, Spin, Subscriber, WaitStep,
};
use framebus_core::Frame;
use framebus_core::SlotHook;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// Most frames a lossless subscriber queue may hold.
const MAX_DEPTH: usize = 256;
/// Most distinct slots a publisher may have in flight.
const MAX_SLOTS: usize = 4096;

/// A slice-sized step's answer: the crate's "timed out" (or "not there yet")
/// error means "keep waiting".
fn pending<T>(r: std::result::Result<T, ChannelError>) -> Result<ControlFlow<T, ChannelError>> {
    wait::pending(r, |e| {
        matches!(e, ChannelError::Timeout(..) | ChannelError::NotFound { .. })
    })
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
    /// (default: a new one). `max_slots`: slot-table entries kept for slots no
    /// subscriber pins (the table grows past it while frames are pinned, up to
    /// 4096).
    #[new]
    #[allow(clippy::too_many_arguments)] // mirrors the Python keyword arguments
    #[pyo3(
        signature = (name, mode="latest", depth=None, on_full="block", timeout=None, pool=None, max_slots=Int(64)),
        text_signature = "(name, mode='latest', depth=None, on_full='block', timeout=None, pool=None, max_slots=64)"
    )]
    fn new(
        py: Python<'_>,
        name: &str,
        mode: &str,
        depth: Option<Int>,
        on_full: &str,
        timeout: Option<f64>,
        pool: Option<PyRef<'_, PyFramePool>>,
        max_slots: Int,
    ) -> Result<Self> {
        let mode = match (args::choice("mode", mode, &["latest", "lossless"])?, depth) {
            ("latest", None) => Mode::Latest,
            ("latest", Some(d)) => {
                return Err(Error::value(format!(
                    "depth={d} only applies to mode=\"lossless\""
                )))
            }
            (_, d) => Mode::Lossless {
                depth: args::count("depth", d.unwrap_or(Int(4)), 1, MAX_DEPTH)? as u32,
            },
        };
        let timeout = args::timeout("timeout", timeout)?;
        let on_full = match args::choice("on_full", on_full, &["block", "raise"])? {
            "block" => OnFull::Block(timeout),
            _ => OnFull::Raise,
        };
        let cfg = PublisherConfig {
            mode,
            on_full,
            max_slots: args::count("max_slots", max_slots, 1, MAX_SLOTS)? as u32,
            pool: pool.map(|p| p.pool.clone()),
            ..PublisherConfig::default()
        };
        let inner = py.detach(|| Publisher::new(name, cfg))?;
        Ok(PyPublisher { inner, on_full })
    }

    /// A writable frame from the publisher's pool: fill it, then `send` it.
    #[pyo3(signature = (width, height, format="BGRA"))]
    fn acquire(&self, py: Python<'_>, width: Int, height: Int, format: &str) -> Result<PyFrame> {
        let l = args::layout(width, height, format, None)?;
        let p = &self.inner;
        Ok(PyFrame::from_frame(
            py.detach(|| p.acquire(l.width, l.height, l.format))?,
        ))
    }

    /// Publish any framebus Frame without copying it; returns its sequence
    /// number in the channel. Do not write into the frame afterwards:
    /// subscribers may be reading it (acquire a new one for the next image).
    /// A lossless send on a full queue waits (Ctrl-C honoured) per `on_full`.
    fn send(&self, py: Python<'_>, frame: PyRef<'_, PyFrame>) -> Result<u64> {
        let f = frame.frame()?;
        drop(frame);
        let p = &self.inner;
        // Fast path, GIL held: a send that need not wait (room in every
        // queue, no other sender) skips releasing and re-taking the GIL,
        // whose code is a good part of a cold send's cache misses.
        if let Some(ticket) = p.try_send(&f)? {
            return Ok(ticket);
        }
        let OnFull::Block(timeout) = self.on_full else {
            return Ok(py.detach(|| p.send(&f))?);
        };
        wait::wait(
            py,
            timeout,
            |slice| match p.send_with(&f, OnFull::Block(Some(slice))) {
                Err(e @ ChannelError::Full { .. }) => Ok(Continue(e)),
                r => r.map(Break),
            },
            |waited, e| match e {
                ChannelError::Full {
                    name,
                    subscriber,
                    depth,
                    ..
                } => Error::Channel(ChannelError::Full {
                    name,
                    subscriber,
                    depth,
                    waited: Some(waited),
                }),
                e => e.into(),
            },
        )
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

    /// Wait (GIL released, Ctrl-C honoured) until `n` subscribers are
    /// connected; returns the count. `timeout=None` waits forever.
    #[pyo3(signature = (n=Int(1), timeout=Some(5.0)), text_signature = "($self, n=1, timeout=5.0)")]
    fn wait_for_subscribers(&self, py: Python<'_>, n: Int, timeout: Option<f64>) -> Result<usize> {
        let n = args::count("n", n, 0, 1 << 20)?;
        let timeout = args::timeout("timeout", timeout)?;
        let p = &self.inner;
        wait::wait(
            py,
            timeout,
            |slice| pending(p.wait_for_subscribers(n, slice)),
            |_, e| e.into(),
        )
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

/// What the getters report: refreshed whenever the binding holds the
/// subscriber, read without waiting for a `recv` that holds it.
#[derive(Default)]
struct Snapshot {
    received: AtomicU64,
    skipped: AtomicU64,
    held: AtomicUsize,
    closed: AtomicBool,
    /// Nanoseconds; 0 = not learnt yet.
    send_period_ns: AtomicU64,
}

impl Snapshot {
    fn refresh(&self, s: &Subscriber) {
        self.received.store(s.received(), Relaxed);
        self.skipped.store(s.skipped(), Relaxed);
        self.held.store(s.held(), Relaxed);
        self.closed.store(s.is_closed(), Relaxed);
        let period = s.send_period().map_or(0, |d| d.as_nanos().max(1) as u64);
        self.send_period_ns.store(period, Relaxed);
    }
}

/// The receiving end of a channel: `Subscriber("cam0", timeout=5.0)`.
#[pyclass(name = "Subscriber", module = "framebus", frozen)]
pub struct PySubscriber {
    inner: Mutex<Subscriber>,
    snapshot: Snapshot,
    name: String,
    mode: Mode,
    /// `device=`: each frame is uploaded as it is received.
    upload: Option<DeviceUpload>,
    /// `device=`: the hook that pins the publisher's slots as they are mapped.
    pin: Option<Arc<dyn SlotHook>>,
}

impl PySubscriber {
    /// Run `f` on the subscriber with the GIL released (see the module docs).
    fn with<R: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut Subscriber) -> R + Send) -> R {
        py.detach(|| {
            let mut s = self.lock();
            let r = f(&mut s);
            self.snapshot.refresh(&s);
            r
        })
    }

    /// Run `f`, which must not block, on the subscriber: with the GIL held
    /// when no other thread is using the subscriber (no GIL hand-over on the
    /// hot path of a polling loop), else like [`PySubscriber::with`].
    fn with_now<R: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut Subscriber) -> R + Send) -> R {
        let run = |s: &mut Subscriber| {
            let r = f(s);
            self.snapshot.refresh(s);
            r
        };
        match self.inner.try_lock() {
            Ok(mut s) => run(&mut s),
            Err(TryLockError::Poisoned(e)) => run(&mut e.into_inner()),
            Err(TryLockError::WouldBlock) => py.detach(|| run(&mut self.lock())),
        }
    }

    /// A getter's view: fresh when nobody holds the subscriber, else the
    /// snapshot of the last call — never a wait on a blocked `recv`.
    fn peek(&self) -> &Snapshot {
        if let Ok(s) = self.inner.try_lock() {
            self.snapshot.refresh(&s);
        }
        &self.snapshot
    }

    fn lock(&self) -> MutexGuard<'_, Subscriber> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `recv` in slices of at most 100 ms, checking for signals in between, so
    /// Ctrl-C interrupts a long wait (the GIL is released inside each slice).
    fn recv_interruptible(&self, py: Python<'_>, timeout: Option<Duration>) -> Result<Frame> {
        // A frame already waiting is taken without a GIL hand-over.
        if let Some(f) = self.with_now(py, |s| s.try_recv())? {
            return Ok(f);
        }
        // The whole call is one wait: a spin=seconds budget counts from here,
        // not from each 100 ms slice.
        let started = Instant::now();
        let deadline = timeout.and_then(|t| started.checked_add(t));
        if let Some(f) = self.wait_holding_gil(py, started, deadline)? {
            return Ok(f);
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        wait::wait(
            py,
            left,
            |slice| {
                let mut s = self.lock();
                let r = s.recv_since(Some(slice), started);
                self.snapshot.refresh(&s);
                pending(r)
            },
            |_, _| {
                Error::Channel(ChannelError::Timeout(
                    timeout.unwrap_or_default(),
                    "a frame",
                ))
            },
        )
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
    ) -> Result<Option<Frame>> {
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
                    let nap = cap(now + nap.min(wait::SLICE)) - now;
                    match self.with(py, |s| s.recv_since(Some(nap), started)) {
                        Ok(f) => return Ok(Some(f)),
                        Err(ChannelError::Timeout(..)) => py.check_signals()?,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }

    /// Busy-wait for a frame until `until` with the GIL held (one atomic load
    /// per poll), handing the GIL over and checking signals every ms.
    fn spin_with_gil_until(&self, py: Python<'_>, until: Instant) -> Result<Option<Frame>> {
        const HAND_OVER: Duration = Duration::from_millis(1);
        let Ok(mut s) = self.inner.try_lock() else {
            return Ok(None);
        };
        let mut handed_over = Instant::now();
        let mut polls = 0u32;
        loop {
            if s.has_pending() {
                if let Some(f) = s.try_recv()? {
                    self.snapshot.refresh(&s);
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
                py.check_signals()?;
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

/// `Subscriber(spin=...)`: seconds, or a policy by name ("auto").
#[derive(FromPyObject)]
enum SpinArg {
    Seconds(f64),
    Name(String),
}

impl SpinArg {
    fn parse(self) -> Result<Spin> {
        match self {
            SpinArg::Name(s) if s == "auto" => Ok(Spin::Adaptive),
            SpinArg::Name(s) => Err(Error::value(format!(
                "invalid spin={s:?} (seconds >= 0, or \"auto\")"
            ))),
            SpinArg::Seconds(x) => match args::timeout("spin", Some(x))? {
                Some(d) if !d.is_zero() => Ok(Spin::For(d)),
                Some(_) => Ok(Spin::Off),
                None => Err(Error::value(format!(
                    "invalid spin={x} (at most {} seconds, or \"auto\")",
                    args::MAX_TIMEOUT_S
                ))),
            },
        }
    }
}

#[pymethods]
impl PySubscriber {
    /// Connect to channel `name`, waiting up to `timeout` seconds (None =
    /// forever; Ctrl-C honoured) for its publisher to appear (0 = try once;
    /// raises FileNotFoundError). `spin`: seconds each `recv` busy-waits
    /// before sleeping (lower wake-up latency for a CPU core; default 0; the
    /// GIL stays held while no other Python thread exists, handed over every
    /// ms), or "auto": sleep until shortly before the next frame is due
    /// (learnt from the publisher's send times), spin only then.
    ///
    /// `device="cuda:0"` delivers frames on the GPU: every mapping of the
    /// publisher's slots is pinned (registered read-only, once per slot), each
    /// frame received is queued for upload on a framebus stream and released
    /// to the publisher once the copy completed; `recv()`, `try_recv()` and
    /// iteration return `CudaFrame`s. `format`, `size`, `method`, `mean`,
    /// `std`, `matrix`, `range`, `stream` and `device_pool` are
    /// `Frame.to_device`'s.
    #[new]
    #[pyo3(
        signature = (name, timeout=Some(0.0), spin=SpinArg::Seconds(0.0), device=None, **upload),
        text_signature = "(name, timeout=0.0, spin=0.0, device=None, **upload)"
    )]
    fn new(
        py: Python<'_>,
        name: &str,
        timeout: Option<f64>,
        spin: SpinArg,
        device: Option<&Bound<'_, PyAny>>,
        upload: Option<&Bound<'_, PyDict>>,
    ) -> Result<Self> {
        let upload = DeviceUpload::from_kwargs("Subscriber", device, upload)?;
        let pin = upload.as_ref().map(DeviceUpload::pin_hook).transpose()?;
        let timeout = args::timeout("timeout", timeout)?;
        let spin = spin.parse()?;
        let mut sub = wait::wait(
            py,
            timeout,
            |slice| pending(Subscriber::connect(name, slice)),
            |_, e| e.into(),
        )?;
        sub.set_spin(spin);
        if let Some(pin) = &pin {
            sub.set_slot_hook(pin.clone());
        }
        let snapshot = Snapshot::default();
        snapshot.refresh(&sub);
        Ok(PySubscriber {
            mode: sub.mode(),
            name: name.to_owned(),
            inner: Mutex::new(sub),
            snapshot,
            upload,
            pin,
        })
    }

    /// With `device=`: what pinning the publisher's slots did so far
    /// (pinned_slots, pinned_bytes, pin_register_ns, pin_failures, ...);
    /// None without `device=`.
    #[getter]
    fn pinned<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(pin) = &self.pin else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        for (k, v) in pin.stats() {
            d.set_item(k, v)?;
        }
        Ok(Some(d))
    }

    /// The next frame (latest mode: the newest not seen yet), zero-copy and
    /// read-only, pinned until released. Waits up to `timeout` seconds (None =
    /// forever) with the GIL released; raises TimeoutError, or ChannelClosed
    /// once the publisher closed or died and every queued frame was received,
    /// or once this subscriber was closed.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> Result<Py<PyAny>> {
        let t = args::timeout("timeout", timeout)?;
        let f = self.recv_interruptible(py, t)?;
        deliver(py, self.upload.as_ref(), PyFrame::from_frame(f))
    }

    /// A frame if one is ready now, else None; ChannelClosed once the publisher
    /// closed or died and nothing is left queued.
    fn try_recv(&self, py: Python<'_>) -> Result<Option<Py<PyAny>>> {
        let f = self.with_now(py, |s| s.try_recv())?;
        f.map(|f| deliver(py, self.upload.as_ref(), PyFrame::from_frame(f)))
            .transpose()
    }

    /// The publisher's send period in seconds as learnt from received frames
    /// (what spin="auto" paces itself by); None until two came at a steady rate.
    #[getter]
    fn send_period(&self) -> Option<f64> {
        match self.peek().send_period_ns.load(Relaxed) {
            0 => None,
            ns => Some(ns as f64 * 1e-9),
        }
    }

    /// Latest mode: frames replaced by newer ones before this subscriber took them.
    #[getter]
    fn skipped(&self) -> u64 {
        self.peek().skipped.load(Relaxed)
    }

    #[getter]
    fn received(&self) -> u64 {
        self.peek().received.load(Relaxed)
    }

    /// Received frames still held (pinned) by this process.
    #[getter]
    fn held(&self) -> usize {
        self.peek().held.load(Relaxed)
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
    fn closed(&self) -> bool {
        self.peek().closed.load(Relaxed)
    }

    /// Stop receiving and give back the channel's memory; frames already
    /// received stay valid (each keeps only its own slot) until released.
    fn close(&self, py: Python<'_>) {
        self.with(py, |s| s.close())
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// `for frame in sub:` waits for each frame and ends when the channel closes.
    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let f = wait::next_frame(self.recv_interruptible(py, None))?;
        Ok(deliver(py, self.upload.as_ref(), f)?)
    }

    fn __repr__(&self) -> String {
        let s = self.peek();
        format!(
            "Subscriber(name={:?}, mode={:?}, received={}, skipped={}, closed={})",
            self.name,
            mode_name(self.mode),
            s.received.load(Relaxed),
            s.skipped.load(Relaxed),
            s.closed.load(Relaxed)
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPublisher>()?;
    m.add_class::<PySubscriber>()?;
    Ok(())
}

crate::context::closes_on_exit!(PyPublisher, close);
crate::context::closes_on_exit!(PySubscriber, close);
