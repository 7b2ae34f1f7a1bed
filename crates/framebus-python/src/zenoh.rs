//! `framebus.zenoh.Publisher` / `Subscriber`: Python face of framebus-zenoh.
//!
//! Conversion, GIL handling and error mapping only, like `channel.rs`: the
//! same surface as the local channel, so code switches by one name. Session
//! set-up, sends and receives run with the GIL released; the waits (`recv`,
//! a lossless send on a full encoder queue) go through `wait::wait`, in
//! 100 ms slices with a signal check between them, so Ctrl-C works whatever
//! the timeout. Both ends are `Sync` (their state is behind the crate's own
//! locks), so the getters never wait for a blocked call.

use crate::args::{self, Int};
use crate::cuda::{deliver, DeviceUpload};
use crate::errors::{Error, Result};
use crate::frame::PyFrame;
use crate::pool::{pool_or_default, PyFramePool};
use crate::wait;
use framebus_core::{FramePool, PoolConfig};
use framebus_zenoh::{
    ConfigSource, Encoding, Mode, Publisher, PublisherConfig, Subscriber, ZenohError,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// `config=`: None (Zenoh's defaults), a dict, JSON5 text (starts with `{`) or a path.
fn config_arg(config: Option<&Bound<'_, PyAny>>) -> Result<ConfigSource> {
    let Some(c) = config else {
        return Ok(ConfigSource::Default);
    };
    if c.is_none() {
        return Ok(ConfigSource::Default);
    }
    let py = c.py();
    if c.is_instance_of::<PyDict>() {
        let text: String = py
            .import("json")?
            .call_method1("dumps", (c,))
            .map_err(|e| Error::type_(format!("config dict is not JSON-serialisable: {e}")))?
            .extract()?;
        return Ok(ConfigSource::Json5(text));
    }
    if let Ok(s) = c.cast::<PyString>() {
        return Ok(ConfigSource::from_text_or_path(s.to_str()?));
    }
    match py.import("os")?.call_method1("fspath", (c,)) {
        Ok(p) => Ok(ConfigSource::File(p.extract::<String>()?.into())),
        Err(_) => Err(Error::type_(format!(
            "config must be None, a dict, JSON5 text or a path, not {}",
            c.get_type().name()?
        ))),
    }
}

/// The crate's "timed out" answer means "keep waiting" within a slice.
fn pending<T>(
    r: std::result::Result<T, ZenohError>,
) -> Result<std::ops::ControlFlow<T, ZenohError>> {
    wait::pending(r, ZenohError::is_timeout)
}

/// Sends frames to a Zenoh key: `framebus.zenoh.Publisher("cams/0", config=...)`.
#[pyclass(name = "ZenohPublisher", module = "framebus.zenoh", frozen)]
pub struct PyZenohPublisher {
    inner: Publisher,
}

#[pymethods]
impl PyZenohPublisher {
    /// `key`: a Zenoh key without wildcards. `config`: a Zenoh configuration
    /// (dict, JSON5 text, or a path; None = Zenoh's defaults). `mode`:
    /// "latest" (drop under congestion, subscribers keep the newest) or
    /// "lossless" (reliable, blocks the sender). `encoding`: "raw", "lz4",
    /// "zstd" or "jpeg"; `quality`: JPEG 1..100 (default 90) or zstd level
    /// 1..22 (default 3). `pool`: where `acquire` takes frames from.
    /// `local`: also serve subscribers of this host through framebus's own
    /// channel (no copy, nothing on the loopback; docs/zenoh.md).
    #[new]
    #[allow(clippy::too_many_arguments)] // mirrors the Python keyword arguments
    #[pyo3(
        signature = (key, *, config=None, mode="latest", encoding="raw", quality=None, pool=None, local=true),
        text_signature = "(key, *, config=None, mode='latest', encoding='raw', quality=None, pool=None, local=True)"
    )]
    fn new(
        py: Python<'_>,
        key: &str,
        config: Option<&Bound<'_, PyAny>>,
        mode: &str,
        encoding: &str,
        quality: Option<Int>,
        pool: Option<PyRef<'_, PyFramePool>>,
        local: bool,
    ) -> Result<Self> {
        let mode = Mode::parse(args::choice("mode", mode, &["latest", "lossless"])?)?;
        let encoding = args::choice("encoding", encoding, &Encoding::NAMES)?;
        let quality = quality
            .map(|q| args::count("quality", q, 1, 100).map(|q| q as i64))
            .transpose()?;
        let encoding = Encoding::parse(encoding, quality)?;
        let cfg = PublisherConfig {
            mode,
            encoding,
            config: config_arg(config)?,
            pool: Some(pool_or_default(pool.as_deref())?),
            local,
        };
        let key = key.to_owned();
        let inner = py.detach(|| Publisher::new(&key, cfg))?;
        Ok(PyZenohPublisher { inner })
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

    /// Publish any framebus Frame; returns its sequence number. Raw frames
    /// are handed to Zenoh without a copy (the slot stays pinned until Zenoh
    /// is done with it); encoded ones go to the encoder thread. Do not write
    /// into the frame afterwards. A lossless send waits (Ctrl-C honoured)
    /// while the encoder's queue is full.
    fn send(&self, py: Python<'_>, frame: PyRef<'_, PyFrame>) -> Result<u64> {
        let f = frame.frame()?;
        drop(frame);
        let p = &self.inner;
        wait::wait(
            py,
            None,
            |slice| pending(p.send_for(&f, slice)),
            |_, e| e.into(),
        )
    }

    /// The framebus subscribers of the key (wherever they are; those reading
    /// through the local channel included); when there is none, 1 if a
    /// subscriber framebus cannot count (a plain Zenoh one) matches, else 0.
    #[getter]
    fn subscribers(&self, py: Python<'_>) -> Result<usize> {
        let p = &self.inner;
        Ok(py.detach(|| p.subscribers())?)
    }

    /// Wait (GIL released, Ctrl-C honoured) until `subscribers` is at least
    /// `n`; returns it. `timeout=None` waits forever.
    #[pyo3(signature = (n=Int(1), timeout=Some(5.0)), text_signature = "($self, n=1, timeout=5.0)")]
    fn wait_for_subscribers(&self, py: Python<'_>, n: Int, timeout: Option<f64>) -> Result<usize> {
        let n = args::count("n", n, 0, 1 << 20)?;
        let timeout = args::timeout("timeout", timeout)?;
        let p = &self.inner;
        wait::wait(
            py,
            timeout,
            |slice| pending(p.wait_for_subscribers(n, slice)),
            |waited, e| match e {
                ZenohError::Subscribers { wanted, have, .. } => ZenohError::Subscribers {
                    waited,
                    wanted,
                    have,
                }
                .into(),
                e => e.into(),
            },
        )
    }

    /// Counters: sent (to Zenoh), replaced, raw_bytes, wire_bytes, encode_ns,
    /// copies, errors, local (frames handed to this host's subscribers
    /// through the local channel).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("sent", s.sent)?;
        d.set_item("replaced", s.replaced)?;
        d.set_item("raw_bytes", s.raw_bytes)?;
        d.set_item("wire_bytes", s.wire_bytes)?;
        d.set_item("encode_ns", s.encode_ns)?;
        d.set_item("copies", s.copies)?;
        d.set_item("errors", s.errors)?;
        d.set_item("local", s.local)?;
        Ok(d)
    }

    #[getter]
    fn pool(&self) -> PyFramePool {
        PyFramePool {
            pool: self.inner.pool().clone(),
        }
    }

    #[getter]
    fn key(&self) -> &str {
        self.inner.key()
    }

    #[getter]
    fn mode(&self) -> &'static str {
        self.inner.mode().name()
    }

    #[getter]
    fn encoding(&self) -> &'static str {
        self.inner.encoding().name()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Send what is queued (lossless), wait (at most 5 s) until every framebus
    /// subscriber has taken what was sent, withdraw the liveliness token and
    /// close the Zenoh session. Subscribers get every frame, then ChannelClosed.
    fn close(&self, py: Python<'_>) {
        let p = &self.inner;
        py.detach(|| p.close())
    }

    fn __repr__(&self) -> String {
        format!(
            "zenoh.Publisher(key={:?}, mode={:?}, encoding={:?}, sent={}, closed={})",
            self.inner.key(),
            self.inner.mode().name(),
            self.inner.encoding().name(),
            self.inner.stats().sent,
            self.inner.is_closed()
        )
    }
}

/// Receives frames from a Zenoh key: `framebus.zenoh.Subscriber("cams/0", config=...)`.
#[pyclass(name = "ZenohSubscriber", module = "framebus.zenoh", frozen)]
pub struct PyZenohSubscriber {
    inner: Subscriber,
    /// `device=`: each frame is uploaded as it is received.
    upload: Option<DeviceUpload>,
}

impl PyZenohSubscriber {
    fn recv_interruptible(
        &self,
        py: Python<'_>,
        timeout: Option<std::time::Duration>,
    ) -> Result<framebus_core::Frame> {
        let s = &self.inner;
        wait::wait(
            py,
            timeout,
            |slice| pending(s.recv(Some(slice))),
            |waited, _| ZenohError::Timeout(waited, "a frame").into(),
        )
    }
}

#[pymethods]
impl PyZenohSubscriber {
    /// `key`: a Zenoh key expression (wildcards allowed). `config`: as for
    /// the Publisher. `pool`: the FramePool frames received over Zenoh land
    /// in. `local`: take a publisher of this host through its local channel
    /// (its own slots, no copy; `route` says which is used).
    ///
    /// `device="cuda:0"` delivers frames on the GPU as `CudaFrame`s: frames
    /// received over Zenoh land in a pinned pool (`FramePool(pinned=device)`
    /// unless `pool=` is given; a pinned `pool=` also pins a local channel's
    /// slots) and each is queued for upload as it is taken; `format`, `size`,
    /// `method`, `mean`, `std`, `matrix`, `range`, `stream` and `device_pool`
    /// are `Frame.to_device`'s.
    #[new]
    #[pyo3(
        signature = (key, *, config=None, pool=None, local=true, device=None, **upload),
        text_signature = "(key, *, config=None, pool=None, local=True, device=None, **upload)"
    )]
    fn new(
        py: Python<'_>,
        key: &str,
        config: Option<&Bound<'_, PyAny>>,
        pool: Option<PyRef<'_, PyFramePool>>,
        local: bool,
        device: Option<&Bound<'_, PyAny>>,
        upload: Option<&Bound<'_, PyDict>>,
    ) -> Result<Self> {
        let upload = DeviceUpload::from_kwargs("Subscriber", device, upload)?;
        let cfg = config_arg(config)?;
        let pool = match (&upload, pool) {
            (Some(up), None) => FramePool::with_hook(PoolConfig::default(), up.pin_hook()?),
            (_, pool) => pool_or_default(pool.as_deref())?,
        };
        let key = key.to_owned();
        let inner = py.detach(|| Subscriber::with_local(&key, &cfg, Some(pool), local))?;
        Ok(PyZenohSubscriber { inner, upload })
    }

    /// The next frame (latest mode: the newest that arrived), read-only, in a
    /// slot of the subscriber's pool. Waits up to `timeout` seconds (None =
    /// forever; Ctrl-C honoured); TimeoutError, or ChannelClosed once the
    /// publisher went away (liveliness) and every queued frame was received.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> Result<Py<PyAny>> {
        let t = args::timeout("timeout", timeout)?;
        let f = self.recv_interruptible(py, t)?;
        deliver(py, self.upload.as_ref(), PyFrame::from_frame(f))
    }

    /// A frame if one is queued now, else None; ChannelClosed as `recv`.
    fn try_recv(&self, py: Python<'_>) -> Result<Option<Py<PyAny>>> {
        let s = &self.inner;
        py.detach(|| s.try_recv())?
            .map(|f| deliver(py, self.upload.as_ref(), PyFrame::from_frame(f)))
            .transpose()
    }

    /// Counters: received, skipped, bad, wire_bytes, slot_bytes, decode_ns,
    /// publishers, local (frames that came through the local channel),
    /// rebased (frames from another host's clock whose timestamp was moved
    /// onto this host's monotonic clock).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("received", s.received)?;
        d.set_item("skipped", s.skipped)?;
        d.set_item("bad", s.bad)?;
        d.set_item("wire_bytes", s.wire_bytes)?;
        d.set_item("slot_bytes", s.slot_bytes)?;
        d.set_item("decode_ns", s.decode_ns)?;
        d.set_item("publishers", s.publishers)?;
        d.set_item("local", s.local)?;
        d.set_item("rebased", s.rebased)?;
        Ok(d)
    }

    /// How frames arrive now: "local" (framebus's channel, same host) or "zenoh".
    #[getter]
    fn route(&self) -> &'static str {
        if self.inner.is_local() {
            "local"
        } else {
            "zenoh"
        }
    }

    /// Publishers of the key alive now (their liveliness tokens).
    #[getter]
    fn publishers(&self) -> usize {
        self.inner.publishers()
    }

    #[getter]
    fn pool(&self) -> PyFramePool {
        PyFramePool {
            pool: self.inner.pool().clone(),
        }
    }

    #[getter]
    fn key(&self) -> &str {
        self.inner.key()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Stop receiving and close the session; received frames stay valid.
    fn close(&self, py: Python<'_>) {
        let s = &self.inner;
        py.detach(|| s.close())
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// `for frame in sub:` waits for each frame; ends when the publisher goes away.
    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let f = wait::next_frame(self.recv_interruptible(py, None))?;
        Ok(deliver(py, self.upload.as_ref(), f)?)
    }

    fn __repr__(&self) -> String {
        let s = self.inner.stats();
        format!(
            "zenoh.Subscriber(key={:?}, received={}, skipped={}, publishers={}, closed={})",
            self.inner.key(),
            s.received,
            s.skipped,
            s.publishers,
            self.inner.is_closed()
        )
    }
}

/// `framebus.zenoh.init_log(level="info")`: Zenoh's own log to stderr (links,
/// leases, routing), or as `RUST_LOG` says when it is set; the first call decides.
#[pyfunction]
#[pyo3(name = "zenoh_init_log", signature = (level="info"))]
fn init_log(level: &str) -> Result<()> {
    Ok(framebus_zenoh::init_log(level)?)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(init_log, m)?)?;
    m.add_class::<PyZenohPublisher>()?;
    m.add_class::<PyZenohSubscriber>()?;
    Ok(())
}

crate::context::closes_on_exit!(PyZenohPublisher, close);
crate::context::closes_on_exit!(PyZenohSubscriber, close);
