//! `Publisher`: frames out to a Zenoh key.
//!
//! Raw frames go to Zenoh without a copy: the payload is a `ZBytes` over a
//! [`bytes::Bytes`] that owns a clone of the frame (its `Lease`), so the slot
//! stays out of its pool until Zenoh has written the last fragment and
//! dropped the message. Every frame is handed to a sender thread (a lease
//! clone, no copy), which encodes it (lz4, zstd, jpeg: in parallel parts for
//! big frames) and puts it, so the caller never waits inside Zenoh's `put`
//! (which blocks without a bound on a congested lossless link). In latest
//! mode that thread's mailbox holds one frame, replaced by a newer one while
//! the link is busy, so the caller never waits; a lossless caller waits, in
//! bounded slices (`send_for`, so Ctrl-C is seen), only while its queue of
//! [`ENCODER_DEPTH`] frames is full.

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
    /// Serve subscribers of this host through framebus's own channel
    /// (memfds, no copy) instead of Zenoh's loopback (`crate::local`).
    pub local: bool,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            mode: Mode::Latest,
            encoding: Encoding::Raw,
            config: ConfigSource::Default,
            pool: None,
            local: true,
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
    /// Frames handed to subscribers of this host through the local channel
    /// (no copy; sent while at least one was connected).
    pub local: u64,
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
    local: AtomicU64,
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
    /// With a local channel: whether Zenoh knows a subscriber (kept by a
    /// matching listener). Subscribers of this host that take the local
    /// channel withdraw their Zenoh subscription, so a frame nobody else
    /// wants is neither encoded nor put.
    matching: Option<Arc<AtomicBool>>,
    /// When `matching` was last checked against Zenoh while it said "none".
    matching_checked: Mutex<Instant>,
}

/// How often a publisher whose matching listener says "no subscriber" asks
/// Zenoh again before skipping a put.
const MATCHING_RECHECK: Duration = Duration::from_millis(100);

impl Core {
    /// Whether a frame should be put: always without a local channel; with
    /// one, when Zenoh knows a subscriber. A listener's "none" is not trusted
    /// for long: its events come from Zenoh's threads and can arrive out of
    /// order (a dead session's end reported after the new session's start),
    /// so the status is asked again every [`MATCHING_RECHECK`] while it says
    /// none — a stale "none" costs at most that long, never the stream.
    fn wanted(&self) -> bool {
        let Some(m) = &self.matching else {
            return true;
        };
        if m.load(Relaxed) {
            return true;
        }
        let mut checked = self
            .matching_checked
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if checked.elapsed() < MATCHING_RECHECK {
            return false;
        }
        *checked = Instant::now();
        let now = self
            .publisher
            .matching_status()
            .wait()
            .map(|s| s.matching())
            .unwrap_or(true);
        if now {
            m.store(true, Relaxed);
        }
        now
    }

    fn put(&self, frame: &Frame, seq: u64, enc: Encoding) -> Result<()> {
        if !self.wanted() {
            return Ok(());
        }
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
            unix_ns: wire::unix_ns(frame.timestamp_ns()),
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

/// Longest `close` waits for subscribers to take the frames already put
/// (they answer within a round trip once the link has carried them).
pub const CLOSE_DELIVERY_WAIT: Duration = Duration::from_secs(5);

/// Frames a lossless sender queue holds before `send` waits.
pub const ENCODER_DEPTH: usize = 2;

/// The sending end: `Publisher::new("cams/0", PublisherConfig { .. })`.
pub struct Publisher {
    core: Arc<Core>,
    session: zenoh::Session,
    token: Mutex<Option<LivelinessToken>>,
    /// The framebus subscribers of the key (their liveliness tokens).
    subscribers: crate::presence::Subscribers,
    pool: FramePool,
    encoding: Encoding,
    seq: AtomicU64,
    /// The sender thread's queue and handle.
    encoder: (Arc<Encoder>, EncoderThread),
    /// The same-host channel and its liveliness token (`crate::local`).
    local: Option<framebus_channel::Publisher>,
    local_token: Mutex<Option<LivelinessToken>>,
    /// One sender at a time: a frame goes to the local channel and to Zenoh
    /// with one sequence number, so both carry the same numbers.
    send_lock: Mutex<()>,
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
        let subscribers = crate::presence::Subscribers::watch(&session, key)
            .map_err(|e| ZenohError::zenoh("watching the subscribers' liveliness tokens", e))?;
        let pool = cfg.pool.unwrap_or_default();
        let zid = session.zid().to_string();
        // The same-host channel; a name already taken or a failing socket only
        // means subscribers of this host use Zenoh too.
        let local = if cfg.local {
            framebus_channel::Publisher::new(
                &crate::local::channel_name(&zid),
                framebus_channel::PublisherConfig {
                    mode: match cfg.mode {
                        Mode::Latest => framebus_channel::Mode::Latest,
                        Mode::Lossless => framebus_channel::Mode::Lossless {
                            depth: crate::subscriber::LOSSLESS_DEPTH as u32,
                        },
                    },
                    pool: Some(pool.clone()),
                    ..Default::default()
                },
            )
            .ok()
        } else {
            None
        };
        let (matching, local_token) = match &local {
            None => (None, None),
            Some(_) => {
                let m = Arc::new(AtomicBool::new(
                    publisher
                        .matching_status()
                        .wait()
                        .map(|s| s.matching())
                        .unwrap_or(true),
                ));
                let m2 = m.clone();
                publisher
                    .matching_listener()
                    .callback(move |s| m2.store(s.matching(), Relaxed))
                    .background()
                    .wait()
                    .map_err(|e| ZenohError::zenoh("declaring the matching listener", e))?;
                let token = session
                    .liveliness()
                    .declare_token(crate::local::token_key(&crate::local::host_id(), &zid, key))
                    .wait()
                    .map_err(|e| ZenohError::zenoh("declaring the local liveliness token", e))?;
                (Some(m), Some(token))
            }
        };
        let core = Arc::new(Core {
            key: key.to_owned(),
            mode: cfg.mode,
            publisher,
            counters: Counters::default(),
            matching,
            matching_checked: Mutex::new(Instant::now()),
        });
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
            .map_err(|e| ZenohError::zenoh("starting the sender thread", e))?;
        let encoder = (enc, Mutex::new(Some(h)));
        Ok(Publisher {
            core,
            session,
            token: Mutex::new(Some(token)),
            subscribers,
            pool,
            encoding: cfg.encoding,
            seq: AtomicU64::new(0),
            encoder,
            local,
            local_token: Mutex::new(local_token),
            send_lock: Mutex::new(()),
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

    /// Whether the local channel serves a subscriber of this host.
    pub fn has_local_subscribers(&self) -> bool {
        self.local.as_ref().is_some_and(|c| c.subscribers() > 0)
    }

    /// Whether at least one subscriber matches the key: one Zenoh knows of,
    /// or one of this host on the local channel (a frame sent before one is
    /// known goes nowhere).
    pub fn has_subscribers(&self) -> Result<bool> {
        if self.has_local_subscribers() {
            return Ok(true);
        }
        self.core
            .publisher
            .matching_status()
            .wait()
            .map(|m| m.matching())
            .map_err(|e| ZenohError::zenoh("asking for matching subscribers", e))
    }

    /// How many subscribers the key has: the framebus subscribers, counted
    /// by their liveliness tokens ([`crate::presence`]; those reading through
    /// the local channel included); when there is none, 1 if a subscriber
    /// framebus cannot count (a plain Zenoh one) matches, else 0.
    pub fn subscribers(&self) -> Result<usize> {
        match self.subscribers.count() {
            0 => Ok(usize::from(self.has_subscribers()?)),
            n => Ok(n),
        }
    }

    /// Wait up to `timeout` until [`Publisher::subscribers`] is at least `n`
    /// (polled every 10 ms); returns it. `Timeout` if it stayed below.
    pub fn wait_for_subscribers(&self, n: usize, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self.subscribers()?;
            if have >= n {
                return Ok(have);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ZenohError::Subscribers {
                    waited: timeout,
                    wanted: n,
                    have,
                });
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
        }
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
        let deadline = Instant::now() + wait;
        let _serial = self.send_lock.lock().unwrap_or_else(|e| e.into_inner());
        // 1. Room in a lossless encoder's queue, before anything is sent: only
        //    this thread adds to it (under `send_lock`), so the room stays.
        let (enc, _) = &self.encoder;
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
            if self.core.mode == Mode::Latest || q.jobs.len() < ENCODER_DEPTH {
                break;
            }
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
        drop(q); // (step 3 takes it again)
                 // 2. The local channel, every frame (so its sequence numbers are
                 //    ours); a full lossless queue there sends nothing, so a retry is safe.
        if let Some(ch) = &self.local {
            let readers = ch.subscribers() > 0;
            let left = deadline.saturating_duration_since(Instant::now());
            match ch.send_with(frame, framebus_channel::OnFull::Block(Some(left))) {
                Ok(_) if readers => {
                    self.core.counters.local.fetch_add(1, Relaxed);
                }
                Ok(_) => {}
                Err(framebus_channel::ChannelError::Full { .. }) => {
                    return Err(ZenohError::Timeout(
                        wait,
                        "room in the local channel's queue",
                    ));
                }
                // A frame the channel cannot share (a slot without a file
                // descriptor, docs/zenoh.md): local readers miss it, Zenoh
                // still gets it.
                Err(_) => {}
            }
        }
        // 3. Zenoh.
        let seq = self.seq.fetch_add(1, Relaxed) + 1;
        let mut q = enc.lock();
        if self.core.mode == Mode::Latest {
            let replaced = q.jobs.drain(..).count() as u64;
            self.core.counters.replaced.fetch_add(replaced, Relaxed);
        }
        q.jobs.push_back((frame.clone(), seq));
        drop(q);
        enc.cv.notify_all();
        Ok(seq)
    }

    /// Wait until the encoder has handed every queued frame to Zenoh.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let (enc, _) = &self.encoder;
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
            local: c.local.load(Relaxed),
        }
    }

    /// Stop: encode what is queued (lossless), wait (up to
    /// [`CLOSE_DELIVERY_WAIT`]) until every framebus subscriber has taken
    /// what was put ([`crate::delivery`]: Zenoh's close would cut a batch
    /// being written), withdraw the liveliness token (subscribers drain what
    /// arrived, then get `Closed`) and close the session.
    pub fn close(&self) {
        if self.closed.swap(true, Relaxed) {
            return;
        }
        let (enc, handle) = &self.encoder;
        if self.core.mode == Mode::Lossless {
            let _ = self.flush(Duration::from_secs(10));
        }
        enc.lock().closed = true;
        enc.cv.notify_all();
        if let Some(h) = handle.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
        let _ = crate::delivery::wait_delivered(&self.session, &self.core.key, CLOSE_DELIVERY_WAIT);
        for token in [&self.local_token, &self.token] {
            if let Some(t) = token.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = t.undeclare().wait();
            }
        }
        // Local subscribers get what is queued, then `Closed`.
        if let Some(ch) = &self.local {
            ch.close();
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
