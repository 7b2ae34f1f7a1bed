//! `Subscriber`: frames in from a Zenoh key, into pool slots.
//!
//! Zenoh calls back with each sample; the callback only queues it (latest:
//! replaces what is queued; lossless: waits while `depth` samples are queued,
//! which holds Zenoh's reader and so, through TCP, the publisher). `recv`
//! takes a sample and copies (raw) or decodes (lz4, zstd, jpeg) its payload
//! straight into a slot of the subscriber's pool: one copy out of Zenoh's
//! receive buffers, none into Python objects.
//!
//! A liveliness subscriber watches the publishers' tokens: once a publisher
//! was seen and none is left, `recv` delivers what is queued and then says
//! `Closed(PublisherGone)` — once per departure: the next `recv` waits (up to
//! its timeout) for a publisher to come back, and frames flow again.

use crate::config::{self, ConfigSource};
use crate::error::{CloseReason, Result, ZenohError};
use crate::wire::{self, Meta};
use framebus_core::{Frame, FrameLayout, FramePool};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use zenoh::sample::{Sample, SampleKind};
use zenoh::Wait;

/// Samples a lossless subscriber queues before it holds Zenoh back.
pub const LOSSLESS_DEPTH: usize = 4;

/// Counters of a subscriber (`stats()`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscriberStats {
    /// Frames returned by `recv`.
    pub received: u64,
    /// Latest mode: samples replaced by a newer one before `recv` took them,
    /// plus gaps in the publisher's sequence numbers (frames Zenoh dropped).
    pub skipped: u64,
    /// Samples that were not framebus frames (bad attachment, size or data).
    pub bad: u64,
    /// Payload bytes received.
    pub wire_bytes: u64,
    /// Bytes written into slots (one copy or decode per frame).
    pub slot_bytes: u64,
    /// Nanoseconds spent copying and decoding into slots.
    pub decode_ns: u64,
    /// Publishers alive now (liveliness tokens seen).
    pub publishers: usize,
}

struct State {
    queue: VecDeque<Sample>,
    alive: HashSet<String>,
    seen_publisher: bool,
    /// `Closed(PublisherGone)` was returned since the last publisher left.
    gone_reported: bool,
    closed: bool,
    replaced: u64,
    last_seq: Option<u64>,
    stats: SubscriberStats,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_sample(&self, sample: Sample) {
        if sample.kind() != SampleKind::Put {
            return;
        }
        // Latest unless the publisher says lossless (plain Zenoh publishers: latest).
        let lossless = sample
            .attachment()
            .map(|a| {
                let b = a.to_bytes();
                memfind(&b, b"\"mode\":\"lossless\"")
            })
            .unwrap_or(false);
        let mut st = self.lock();
        if lossless {
            while st.queue.len() >= LOSSLESS_DEPTH && !st.closed {
                st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.closed {
                return;
            }
        } else {
            st.replaced += st.queue.len() as u64;
            st.queue.clear();
        }
        st.queue.push_back(sample);
        drop(st);
        self.cv.notify_all();
    }

    fn on_liveliness(&self, sample: Sample) {
        let key = sample.key_expr().as_str().to_owned();
        let mut st = self.lock();
        match sample.kind() {
            SampleKind::Put => {
                st.seen_publisher = true;
                st.gone_reported = false;
                st.alive.insert(key);
            }
            SampleKind::Delete => {
                st.alive.remove(&key);
            }
        }
        st.stats.publishers = st.alive.len();
        drop(st);
        self.cv.notify_all();
    }
}

fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The receiving end: `Subscriber::new("cams/0", ConfigSource::Default, None)`.
pub struct Subscriber {
    key: String,
    shared: Arc<Shared>,
    session: Mutex<Option<zenoh::Session>>,
    subs: Mutex<Vec<zenoh::pubsub::Subscriber<()>>>,
    pool: FramePool,
}

impl Subscriber {
    /// Subscribe to `key` (wildcards allowed); `pool` holds received frames
    /// (default: a new bounded one).
    pub fn new(key: &str, config: &ConfigSource, pool: Option<FramePool>) -> Result<Subscriber> {
        let ke = crate::publisher::check_key(key, true)?;
        let session = config::open(config)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                alive: HashSet::new(),
                seen_publisher: false,
                gone_reported: false,
                closed: false,
                replaced: 0,
                last_seq: None,
                stats: SubscriberStats::default(),
            }),
            cv: Condvar::new(),
        });
        let s1 = shared.clone();
        let data = session
            .declare_subscriber(ke)
            .callback(move |s| s1.on_sample(s))
            .wait()
            .map_err(|e| ZenohError::zenoh("declaring the subscriber", e))?;
        let s2 = shared.clone();
        let live = session
            .liveliness()
            .declare_subscriber(crate::publisher::token_key(key, "*"))
            .history(true)
            .callback(move |s| s2.on_liveliness(s))
            .wait()
            .map_err(|e| ZenohError::zenoh("declaring the liveliness subscriber", e))?;
        Ok(Subscriber {
            key: key.to_owned(),
            shared,
            session: Mutex::new(Some(session)),
            subs: Mutex::new(vec![data, live]),
            pool: pool.unwrap_or_default(),
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }
    pub fn pool(&self) -> &FramePool {
        &self.pool
    }
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Publishers alive now.
    pub fn publishers(&self) -> usize {
        self.shared.lock().alive.len()
    }

    pub fn stats(&self) -> SubscriberStats {
        let st = self.shared.lock();
        let mut s = st.stats.clone();
        s.skipped += st.replaced;
        s
    }

    /// The next frame, waiting up to `timeout` (None: forever).
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Frame> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let sample = {
            let mut st = self.shared.lock();
            loop {
                if st.closed {
                    return Err(self.closed(CloseReason::Closed));
                }
                if let Some(s) = st.queue.pop_front() {
                    break s;
                }
                if st.seen_publisher && st.alive.is_empty() && !st.gone_reported {
                    // Said once per departure; the next recv waits for a new one.
                    st.gone_reported = true;
                    return Err(self.closed(CloseReason::PublisherGone));
                }
                let now = Instant::now();
                st = match deadline {
                    Some(d) if now >= d => {
                        return Err(ZenohError::Timeout(timeout.unwrap_or_default(), "a frame"))
                    }
                    Some(d) => {
                        self.shared
                            .cv
                            .wait_timeout(st, d - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                    None => self.shared.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                };
            }
        };
        self.shared.cv.notify_all(); // room for a blocked lossless callback
        self.decode(&sample)
    }

    /// A frame if one is queued now, else `None`; `Closed` as `recv`.
    pub fn try_recv(&self) -> Result<Option<Frame>> {
        match self.recv(Some(Duration::ZERO)) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.is_timeout() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn closed(&self, reason: CloseReason) -> ZenohError {
        ZenohError::Closed {
            key: self.key.clone(),
            reason,
        }
    }

    fn bad(&self, why: String) -> ZenohError {
        self.shared.lock().stats.bad += 1;
        ZenohError::BadFrame {
            key: self.key.clone(),
            why,
        }
    }

    /// Copy or decode a sample into a slot.
    fn decode(&self, sample: &Sample) -> Result<Frame> {
        let t0 = Instant::now();
        let Some(att) = sample.attachment() else {
            return Err(self.bad(
                "sample has no attachment (width, height, format...: see docs/zenoh.md)".into(),
            ));
        };
        let meta = Meta::parse(&att.to_bytes()).map_err(|w| self.bad(w))?;
        let payload = sample.payload();
        let layout = if meta.encoding == "jpeg" {
            FrameLayout::new(
                meta.layout.width,
                meta.layout.height,
                meta.layout.format,
                None,
            )?
        } else {
            meta.layout
        };
        let lease = self.pool.acquire(layout.byte_len())?;
        let mut frame = Frame::new(lease, layout)?.with_meta(meta.timestamp_ns, meta.seq);
        let out = frame
            .data_mut()
            .ok_or_else(|| self.bad("a fresh slot is not writable".into()))?;
        match meta.encoding {
            "raw" => {
                if payload.len() != out.len() {
                    return Err(self.bad(format!(
                        "raw payload has {} bytes, a {}x{} {} frame with stride {} needs {}",
                        payload.len(),
                        layout.width,
                        layout.height,
                        layout.format,
                        layout.stride,
                        out.len()
                    )));
                }
                let mut at = 0;
                for s in payload.slices() {
                    out[at..at + s.len()].copy_from_slice(s);
                    at += s.len();
                }
            }
            "lz4" | "zstd" => {
                let bytes = payload.to_bytes();
                wire::decompress(meta.encoding, &bytes, &meta.parts, out)
                    .map_err(|w| self.bad(w))?;
            }
            _ => {
                let bytes = payload.to_bytes();
                wire::jpeg_decode(&layout, &bytes, out).map_err(|w| self.bad(w))?;
            }
        }
        let mut st = self.shared.lock();
        if let Some(last) = st.last_seq {
            if meta.seq > last + 1 {
                st.stats.skipped += meta.seq - last - 1;
            }
        }
        st.last_seq = Some(meta.seq);
        st.stats.received += 1;
        st.stats.wire_bytes += payload.len() as u64;
        st.stats.slot_bytes += layout.byte_len() as u64;
        st.stats.decode_ns += t0.elapsed().as_nanos() as u64;
        drop(st);
        Ok(frame.into_readonly())
    }

    /// Stop receiving: undeclare, close the session; frames already received
    /// stay valid. `recv` then raises `Closed(Closed)`.
    pub fn close(&self) {
        {
            let mut st = self.shared.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            st.queue.clear();
        }
        self.shared.cv.notify_all();
        for s in self
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.undeclare().wait();
        }
        if let Some(s) = self
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = s.close().wait();
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.close();
    }
}
