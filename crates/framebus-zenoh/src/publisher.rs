//! `Publisher`: frames out to a Zenoh key.
//!
//! Raw frames go to Zenoh without a copy: the payload is a `ZBytes` over a
//! [`bytes::Bytes`] that owns a clone of the frame (its `Lease`), so the slot
//! stays out of its pool until Zenoh has written the last fragment and
//! dropped the message. Lossless raw frames are put on the caller's thread;
//! latest-mode frames and encoded ones (lz4, zstd, jpeg) are handed to a
//! sender thread (a lease clone, no copy), which encodes them (in parallel
//! parts for big frames) and puts them. In latest mode that thread's mailbox
//! holds one frame, replaced by a newer one while the link is busy, so the
//! caller never waits; a lossless caller waits only when its queue is full.

use crate::config::{self, ConfigSource};
use crate::error::{CloseReason, Result, ZenohError};
use crate::wire::{self, Encoding, Meta};
use framebus_core::{Frame, FramePool, PixelFormat};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zenoh::liveliness::LivelinessToken;
use zenoh::qos::CongestionControl;
use zenoh::Wait;

/// Delivery semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Express; the sender thread's one-frame mailbox and the subscribers keep
    /// only the newest frame, so age stays bounded when the link is slower than
    /// the producer, and `send` never waits.
    Latest,
    /// Reliable, ordered, congestion control *block*: the producer feels
    /// back-pressure (Zenoh closes a link blocked for longer than its
    /// `congestion_control.block.wait_before_close`, 5 s by default).
    Lossless,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Latest => "latest",
            Mode::Lossless => "lossless",
        }
    }
    pub fn parse(s: &str) -> Result<Mode> {
        match s {
            "latest" => Ok(Mode::Latest),
            "lossless" => Ok(Mode::Lossless),
            _ => Err(ZenohError::InvalidArgument {
                what: "mode",
                value: format!("{s:?}"),
                why: "expected latest or lossless".into(),
            }),
        }
    }
}

/// How a [`Publisher`] is made.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub mode: Mode,
    pub encoding: Encoding,
    pub config: ConfigSource,
    /// The pool `acquire` takes frames from (default: a new bounded one).
    pub pool: Option<FramePool>,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            mode: Mode::Latest,
            encoding: Encoding::Raw,
            config: ConfigSource::Default,
            pool: None,
        }
    }
}

/// Counters of a publisher (`stats()`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublisherStats {
    /// Frames given to Zenoh.
    pub sent: u64,
    /// Latest mode: frames replaced in the encoder's mailbox by a newer one
    /// before they were encoded (Zenoh's own congestion drops are not seen here).
    pub replaced: u64,
    /// Bytes of the frames sent, before encoding.
    pub raw_bytes: u64,
    /// Bytes of the payloads given to Zenoh.
    pub wire_bytes: u64,
    /// Nanoseconds spent encoding, all frames together.
    pub encode_ns: u64,
    /// Frames whose pixels framebus copied before Zenoh got them: 0 for raw
    /// (Zenoh serialises the payload into its batches itself: one copy there).
    pub copies: u64,
    /// Encoder failures (the message of the last one is raised by `send`).
    pub errors: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    replaced: AtomicU64,
    raw_bytes: AtomicU64,
    wire_bytes: AtomicU64,
    encode_ns: AtomicU64,
    copies: AtomicU64,
    errors: AtomicU64,
}

/// A frame owning its slot as a payload: the `Lease` inside the frame keeps
/// the slot out of its pool until Zenoh drops the bytes.
struct LeasedPixels(Frame);

impl AsRef<[u8]> for LeasedPixels {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the frame's lease keeps the mapping alive as long as `self`;
        // a frame handed to `send` must not be written afterwards (documented
        // on `send`, as for the local channel), so nothing writes the bytes
        // while Zenoh reads them.
        unsafe { self.0.data() }
    }
}

/// What every send path shares.
struct Core {
    key: String,
    mode: Mode,
    publisher: zenoh::pubsub::Publisher<'static>,
    counters: Counters,
}

impl Core {
    fn put(&self, frame: &Frame, seq: u64, enc: Encoding) -> Result<()> {
        let layout = *frame.layout();
        let raw_len = layout.byte_len();
        let t0 = Instant::now();
        let (payload, parts, copied): (zenoh::bytes::ZBytes, _, bool) = match enc {
            Encoding::Raw => {
                let b = bytes::Bytes::from_owner(LeasedPixels(frame.clone()));
                (b.into(), Vec::new(), false)
            }
            Encoding::Lz4 | Encoding::Zstd { .. } => {
                // SAFETY: as in `LeasedPixels::as_ref`: a sent frame is not written.
                let data = unsafe { frame.data() };
                let (p, parts) = wire::compress(enc, data)?;
                (p.into(), parts, true)
            }
            Encoding::Jpeg { quality } => {
                // SAFETY: as in `LeasedPixels::as_ref`: a sent frame is not written.
                let data = unsafe { frame.data() };
                (
                    wire::jpeg_encode(&layout, data, quality)?.into(),
                    Vec::new(),
                    true,
                )
            }
        };
        let c = &self.counters;
        if enc != Encoding::Raw {
            c.encode_ns
                .fetch_add(t0.elapsed().as_nanos() as u64, Relaxed);
        }
        let meta = Meta {
            layout,
            timestamp_ns: frame.timestamp_ns(),
            seq,
            encoding: enc.name(),
            parts,
        };
        let wire_len = payload.len();
        let mut att = meta.to_json();
        // The mode tells subscribers whether to keep only the newest frame.
        att.pop();
        att.extend_from_slice(format!(",\"mode\":\"{}\"}}", self.mode.name()).as_bytes());
        self.publisher
            .put(payload)
            .attachment(att)
            .wait()
            .map_err(|e| ZenohError::zenoh("put", e))?;
        c.sent.fetch_add(1, Relaxed);
        c.raw_bytes.fetch_add(raw_len as u64, Relaxed);
        c.wire_bytes.fetch_add(wire_len as u64, Relaxed);
        if copied {
            c.copies.fetch_add(1, Relaxed);
        }
        Ok(())
    }
}

/// Frames waiting for the encoder thread.
struct Queue {
    jobs: VecDeque<(Frame, u64)>,
    busy: bool,
    closed: bool,
    error: Option<String>,
}

struct Encoder {
    queue: Mutex<Queue>,
    cv: Condvar,
}

impl Encoder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The encoder thread, joined by `close`.
type EncoderThread = Mutex<Option<JoinHandle<()>>>;

/// Frames a lossless encoder queue holds before `send` waits.
const ENCODER_DEPTH: usize = 2;

/// The sending end: `Publisher::new("cams/0", PublisherConfig { .. })`.
pub struct Publisher {
    core: Arc<Core>,
    session: zenoh::Session,
    token: Mutex<Option<LivelinessToken>>,
    pool: FramePool,
    encoding: Encoding,
    seq: AtomicU64,
    encoder: Option<(Arc<Encoder>, EncoderThread)>,
    closed: AtomicBool,
}

/// A key Zenoh accepts, in canonical form, without wildcards.
pub(crate) fn check_key(key: &str, wild_ok: bool) -> Result<zenoh::key_expr::OwnedKeyExpr> {
    let bad = |why: String| ZenohError::InvalidKey {
        key: key.to_owned(),
        why,
    };
    if key.is_empty() {
        return Err(bad("empty".into()));
    }
    let ke =
        zenoh::key_expr::OwnedKeyExpr::try_from(key.to_owned()).map_err(|e| bad(e.to_string()))?;
    if !wild_ok && ke.is_wild() {
        return Err(bad("a publisher's key may not contain * or $*".into()));
    }
    if key.starts_with('@') {
        return Err(bad("keys starting with @ are reserved".into()));
    }
    Ok(ke)
}

/// The liveliness token of a publisher of `key`.
pub(crate) fn token_key(key: &str, id: &str) -> String {
    format!("@framebus/pub/{key}/{id}")
}

impl Publisher {
    pub fn new(key: &str, cfg: PublisherConfig) -> Result<Publisher> {
        let ke = check_key(key, false)?;
        let session = config::open(&cfg.config)?;
        // Latest mode blocks too, but only its sender thread: frames the link
        // cannot take meanwhile are replaced in the mailbox (`replaced`), so the
        // caller never waits and a big frame is never cut. Zenoh's *drop* lost
        // every 8 MB frame on a 100 Mbit/s link: its fragments cannot all be
        // queued within `max_wait_before_drop_fragments` (docs/zenoh.md).
        let (cc, express) = match cfg.mode {
            Mode::Latest => (CongestionControl::Block, true),
            Mode::Lossless => (CongestionControl::Block, false),
        };
        let publisher = session
            .declare_publisher(ke.clone())
            .congestion_control(cc)
            .express(express)
            .wait()
            .map_err(|e| ZenohError::zenoh("declaring the publisher", e))?;
        let token = session
            .liveliness()
            .declare_token(token_key(key, &session.zid().to_string()))
            .wait()
            .map_err(|e| ZenohError::zenoh("declaring the liveliness token", e))?;
        let core = Arc::new(Core {
            key: key.to_owned(),
            mode: cfg.mode,
            publisher,
            counters: Counters::default(),
        });
        let encoder = if cfg.encoding == Encoding::Raw && cfg.mode == Mode::Lossless {
            None
        } else {
            let enc = Arc::new(Encoder {
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    busy: false,
                    closed: false,
                    error: None,
                }),
                cv: Condvar::new(),
            });
            let (e2, c2, encoding) = (enc.clone(), core.clone(), cfg.encoding);
            let h = std::thread::Builder::new()
                .name("framebus-zenoh-tx".into())
                .spawn(move || encoder_thread(&e2, &c2, encoding))
                .map_err(|e| ZenohError::zenoh("starting the encoder thread", e))?;
            Some((enc, Mutex::new(Some(h))))
        };
        Ok(Publisher {
            core,
            session,
            token: Mutex::new(Some(token)),
            pool: cfg.pool.unwrap_or_default(),
            encoding: cfg.encoding,
            seq: AtomicU64::new(0),
            encoder,
            closed: AtomicBool::new(false),
        })
    }

    pub fn key(&self) -> &str {
        &self.core.key
    }
    pub fn mode(&self) -> Mode {
        self.core.mode
    }
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
    pub fn pool(&self) -> &FramePool {
        &self.pool
    }
    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// Whether Zenoh knows of at least one subscriber matching the key (a
    /// frame sent before one is known goes nowhere).
    pub fn has_subscribers(&self) -> Result<bool> {
        self.core
            .publisher
            .matching_status()
            .wait()
            .map(|m| m.matching())
            .map_err(|e| ZenohError::zenoh("asking for matching subscribers", e))
    }

    /// Wait up to `timeout` until a subscriber matches (polled every 10 ms;
    /// Zenoh tells "any", not how many). `Timeout` if none came.
    pub fn wait_for_subscribers(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.has_subscribers()? {
            let now = Instant::now();
            if now >= deadline {
                return Err(ZenohError::Timeout(timeout, "a matching subscriber"));
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
        }
        Ok(())
    }

    /// A writable frame from the publisher's pool.
    pub fn acquire(&self, width: usize, height: usize, format: PixelFormat) -> Result<Frame> {
        self.encoding.check_format(format)?;
        Ok(self.pool.acquire_frame(width, height, format, None)?)
    }

    fn closed_err(&self) -> ZenohError {
        ZenohError::Closed {
            key: self.core.key.clone(),
            reason: CloseReason::Closed,
        }
    }

    /// Send `frame` (no copy for raw); returns its sequence number. A lossless
    /// send waits while the encoder's queue is full, forever.
    pub fn send(&self, frame: &Frame) -> Result<u64> {
        loop {
            match self.send_for(frame, Duration::from_millis(100)) {
                Err(e) if e.is_timeout() => continue,
                r => return r,
            }
        }
    }

    /// One bounded attempt of [`Publisher::send`]: `Timeout` when a lossless
    /// encoder queue stayed full for `wait` (the frame was not sent).
    pub fn send_for(&self, frame: &Frame, wait: Duration) -> Result<u64> {
        if self.is_closed() {
            return Err(self.closed_err());
        }
        self.encoding.check_format(frame.format())?;
        let Some((enc, _)) = &self.encoder else {
            let seq = self.seq.fetch_add(1, Relaxed) + 1;
            self.core.put(frame, seq, Encoding::Raw)?;
            return Ok(seq);
        };
        let deadline = Instant::now() + wait;
        let mut q = enc.lock();
        loop {
            if let Some(e) = q.error.take() {
                return Err(ZenohError::Encode {
                    encoding: self.encoding.name(),
                    why: e,
                });
            }
            if q.closed {
                return Err(self.closed_err());
            }
            match self.core.mode {
                Mode::Latest => {
                    let replaced = q.jobs.drain(..).count() as u64;
                    self.core.counters.replaced.fetch_add(replaced, Relaxed);
                    break;
                }
                Mode::Lossless if q.jobs.len() < ENCODER_DEPTH => break,
                Mode::Lossless => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(ZenohError::Timeout(wait, "room in the encoder's queue"));
                    }
                    q = enc
                        .cv
                        .wait_timeout(q, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        let seq = self.seq.fetch_add(1, Relaxed) + 1;
        q.jobs.push_back((frame.clone(), seq));
        drop(q);
        enc.cv.notify_all();
        Ok(seq)
    }

    /// Wait until the encoder has handed every queued frame to Zenoh.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let Some((enc, _)) = &self.encoder else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        let mut q = enc.lock();
        while !q.jobs.is_empty() || q.busy {
            let now = Instant::now();
            if now >= deadline {
                return Err(ZenohError::Timeout(timeout, "the encoder to finish"));
            }
            q = enc
                .cv
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    pub fn stats(&self) -> PublisherStats {
        let c = &self.core.counters;
        PublisherStats {
            sent: c.sent.load(Relaxed),
            replaced: c.replaced.load(Relaxed),
            raw_bytes: c.raw_bytes.load(Relaxed),
            wire_bytes: c.wire_bytes.load(Relaxed),
            encode_ns: c.encode_ns.load(Relaxed),
            copies: c.copies.load(Relaxed),
            errors: c.errors.load(Relaxed),
        }
    }

    /// Stop: encode what is queued (lossless), withdraw the liveliness token
    /// (subscribers drain what arrived, then get `Closed`) and close the session.
    pub fn close(&self) {
        if self.closed.swap(true, Relaxed) {
            return;
        }
        if let Some((enc, handle)) = &self.encoder {
            if self.core.mode == Mode::Lossless {
                let _ = self.flush(Duration::from_secs(10));
            }
            enc.lock().closed = true;
            enc.cv.notify_all();
            if let Some(h) = handle.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = h.join();
            }
        }
        if let Some(t) = self.token.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.undeclare().wait();
        }
        let _ = self.session.close().wait();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.close();
    }
}

fn encoder_thread(enc: &Encoder, core: &Core, encoding: Encoding) {
    loop {
        let (frame, seq) = {
            let mut q = enc.lock();
            q.busy = false;
            enc.cv.notify_all();
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    q.busy = true;
                    break job;
                }
                if q.closed {
                    return;
                }
                q = enc.cv.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        enc.cv.notify_all(); // room in the queue
        if let Err(e) = core.put(&frame, seq, encoding) {
            core.counters.errors.fetch_add(1, Relaxed);
            enc.lock().error = Some(e.to_string());
        }
    }
}
