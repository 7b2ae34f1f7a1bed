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
//!
//! Same host (`local`, `crate::local`): when the only framebus publisher of
//! the key serves a local channel this subscriber can reach, `recv` connects
//! to it and withdraws the Zenoh subscription; frames then arrive as the
//! publisher's own slots (no copy, `stats().local`). Lossless: the frames
//! Zenoh carried before the first one of the channel are delivered first,
//! and the sequence numbers (the same on both paths) drop duplicates.
//! When the channel closes (publisher gone) or another publisher appears,
//! the Zenoh subscription is declared again.

use crate::config::{self, ConfigSource};
use crate::error::{CloseReason, Result, ZenohError};
use crate::wire::{self, Meta};
use framebus_core::{Frame, FrameLayout, FramePool};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
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
    /// Frames received through the local channel (same host: the
    /// publisher's own slots, no copy, nothing on the network).
    pub local: u64,
    /// Frames from another clock (another host) whose timestamp was re-based
    /// onto this host's `CLOCK_MONOTONIC` through their `unix_ns`.
    pub rebased: u64,
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
    /// Zids of publishers with a local channel on this host (their tokens).
    local_pubs: HashSet<String>,
    /// Served by the local channel: samples still arriving are dropped.
    zenoh_off: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    /// Something that may change the route happened (liveliness).
    reroute: AtomicBool,
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
            .map(|a| says_lossless(&a.to_bytes()))
            .unwrap_or(false);
        let mut st = self.lock();
        if lossless {
            while st.queue.len() >= LOSSLESS_DEPTH && !st.closed && !st.zenoh_off {
                st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.closed || st.zenoh_off {
                return;
            }
        } else {
            if st.zenoh_off {
                return;
            }
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
                // A new publisher numbers its frames from 1 again (the local
                // channel's duplicates are recognised by these numbers).
                st.last_seq = None;
                st.alive.insert(key);
            }
            SampleKind::Delete => {
                st.alive.remove(&key);
            }
        }
        st.stats.publishers = st.alive.len();
        drop(st);
        self.reroute.store(true, Relaxed);
        self.cv.notify_all();
    }

    fn on_local_token(&self, sample: Sample) {
        let Some(zid) = crate::local::zid_of_token(sample.key_expr().as_str()) else {
            return;
        };
        let mut st = self.lock();
        match sample.kind() {
            SampleKind::Put => st.local_pubs.insert(zid.to_owned()),
            SampleKind::Delete => st.local_pubs.remove(zid),
        };
        drop(st);
        self.reroute.store(true, Relaxed);
        self.cv.notify_all();
    }

    /// Count the frames missing before `seq` (gaps) and remember it.
    fn note_seq(st: &mut State, seq: u64) {
        if let Some(last) = st.last_seq {
            if seq > last + 1 {
                st.stats.skipped += seq - last - 1;
            }
        }
        st.last_seq = Some(seq);
    }

    /// The one publisher to take through its local channel, if the only
    /// framebus publisher alive has one on this host.
    fn wanted_local(st: &State) -> Option<String> {
        let mut zids = st.alive.iter().filter_map(|k| k.rsplit('/').next());
        let zid = zids.next()?;
        if zids.next().is_some() || !st.local_pubs.contains(zid) {
            return None;
        }
        Some(zid.to_owned())
    }
}

type DataSub = zenoh::pubsub::Subscriber<()>;

/// The Zenoh subscription of the frames' key.
fn declare_data(
    session: &zenoh::Session,
    ke: &zenoh::key_expr::OwnedKeyExpr,
    shared: &Arc<Shared>,
) -> Result<DataSub> {
    let s = shared.clone();
    session
        .declare_subscriber(ke.clone())
        .callback(move |sample| s.on_sample(sample))
        .wait()
        .map_err(|e| ZenohError::zenoh("declaring the subscriber", e))
}

/// How frames reach this subscriber now.
struct Route {
    /// The Zenoh data subscription (withdrawn while the local channel serves).
    data: Option<DataSub>,
    local: Option<LocalRoute>,
    /// Local channels that could not be reached (another netns, a name
    /// taken by someone else): those publishers are read over Zenoh.
    refused: HashSet<String>,
}

struct LocalRoute {
    zid: String,
    sub: framebus_channel::Subscriber,
    lossless: bool,
    /// Lossless, before the switch: the channel's first frame, held until
    /// Zenoh has delivered the frames sent before it.
    first: Option<Frame>,
    /// Lossless, before the switch: when a Zenoh sample was last delivered.
    progress: Instant,
    /// The Zenoh subscription is withdrawn.
    switched: bool,
}

/// Longest a lossless switch to the local channel waits for Zenoh to bring
/// the frames sent before the channel's first one (after which they count
/// as skipped): frames put before a subscriber was known never come.
const SWITCH_GRACE: Duration = Duration::from_millis(1000);
/// Longest a wait on the local channel goes without looking at the route.
const LOCAL_SLICE: Duration = Duration::from_millis(20);

/// Whether an attachment says `"mode": "lossless"`, with any JSON whitespace
/// around the colon (Python's `json.dumps` writes `": "`; matching only the
/// compact form once made a plain publisher's lossless frames latest ones,
/// skipped when they came faster than `recv`).
pub(crate) fn says_lossless(att: &[u8]) -> bool {
    let key = b"\"mode\"";
    let mut rest = att;
    while let Some(i) = rest.windows(key.len()).position(|w| w == key) {
        rest = &rest[i + key.len()..];
        let value = rest.trim_ascii_start();
        if let Some(value) = value.strip_prefix(b":") {
            return value.trim_ascii_start().starts_with(b"\"lossless\"");
        }
    }
    false
}

/// The receiving end: `Subscriber::new("cams/0", ConfigSource::Default, None)`.
pub struct Subscriber {
    key: String,
    ke: zenoh::key_expr::OwnedKeyExpr,
    shared: Arc<Shared>,
    session: Mutex<Option<zenoh::Session>>,
    /// The liveliness subscriptions.
    subs: Mutex<Vec<zenoh::pubsub::Subscriber<()>>>,
    /// Counts this subscriber for publishers ([`crate::presence`]).
    token: Mutex<Option<zenoh::liveliness::LivelinessToken>>,
    /// Held by `recv` while it receives.
    route: Mutex<Route>,
    allow_local: bool,
    pool: FramePool,
}

impl Subscriber {
    /// Subscribe to `key` (wildcards allowed); `pool` holds received frames
    /// (default: a new bounded one). A pool with a slot hook (e.g. pinned for
    /// a GPU) also hooks the mappings of a local channel route.
    pub fn new(key: &str, config: &ConfigSource, pool: Option<FramePool>) -> Result<Subscriber> {
        Subscriber::with_local(key, config, pool, true)
    }

    /// [`Subscriber::new`]; `local`: take a publisher of this host through
    /// its local channel (no copy, nothing on the loopback) — see the module docs.
    pub fn with_local(
        key: &str,
        config: &ConfigSource,
        pool: Option<FramePool>,
        local: bool,
    ) -> Result<Subscriber> {
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
                local_pubs: HashSet::new(),
                zenoh_off: false,
            }),
            cv: Condvar::new(),
            reroute: AtomicBool::new(true),
        });
        let data = declare_data(&session, &ke, &shared)?;
        let s2 = shared.clone();
        let live = session
            .liveliness()
            .declare_subscriber(crate::publisher::token_key(key, "*"))
            .history(true)
            .callback(move |s| s2.on_liveliness(s))
            .wait()
            .map_err(|e| ZenohError::zenoh("declaring the liveliness subscriber", e))?;
        crate::delivery::declare_responder(&session, key)
            .map_err(|e| ZenohError::zenoh("declaring the delivery responder", e))?;
        // After the data subscription: a publisher that sees it has that too.
        let token = crate::presence::declare_token(&session, key)
            .map_err(|e| ZenohError::zenoh("declaring the subscriber's liveliness token", e))?;
        let mut subs = vec![live];
        if local {
            let s3 = shared.clone();
            subs.push(
                session
                    .liveliness()
                    .declare_subscriber(crate::local::token_key(&crate::local::host_id(), "*", key))
                    .history(true)
                    .callback(move |s| s3.on_local_token(s))
                    .wait()
                    .map_err(|e| {
                        ZenohError::zenoh("declaring the local liveliness subscriber", e)
                    })?,
            );
        }
        Ok(Subscriber {
            key: key.to_owned(),
            ke,
            shared,
            session: Mutex::new(Some(session)),
            subs: Mutex::new(subs),
            token: Mutex::new(Some(token)),
            route: Mutex::new(Route {
                data: Some(data),
                local: None,
                refused: HashSet::new(),
            }),
            allow_local: local,
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

    /// Whether frames come through the local channel now (same host).
    pub fn is_local(&self) -> bool {
        let st = self.shared.lock();
        st.zenoh_off
    }

    /// The next frame, waiting up to `timeout` (None: forever).
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Frame> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut route = self.route.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.allow_local && self.shared.reroute.swap(false, Relaxed) {
                self.reroute(&mut route)?;
            }
            // Zenoh's queue first: it holds frames older than the channel's.
            let sample = {
                let mut st = self.shared.lock();
                if st.closed {
                    return Err(self.closed(CloseReason::Closed));
                }
                let s = st.queue.pop_front();
                if s.is_none()
                    && route.local.is_none()
                    && st.seen_publisher
                    && st.alive.is_empty()
                    && !st.gone_reported
                {
                    // Said once per departure; the next recv waits for a new one.
                    st.gone_reported = true;
                    return Err(self.closed(CloseReason::PublisherGone));
                }
                s
            };
            if let Some(sample) = sample {
                self.shared.cv.notify_all(); // room for a blocked lossless callback
                if let Some(lr) = route.local.as_mut() {
                    lr.progress = Instant::now();
                }
                return self.decode(&sample);
            }
            let now = Instant::now();
            let Route { data, local, .. } = &mut *route;
            if let Some(lr) = local.as_mut() {
                let until = deadline.map_or(now + LOCAL_SLICE, |d| d.min(now + LOCAL_SLICE));
                match self.recv_local(lr, data, Some(until)) {
                    Ok(Some(f)) => return Ok(f),
                    Ok(None) => {}
                    Err(e) if e.is_timeout() => {}
                    Err(ZenohError::Closed { .. }) => self.leave_local(&mut route)?,
                    Err(e) => return Err(e),
                }
            } else {
                let st = self.shared.lock();
                // (`reroute` only matters with `local`: never consumed without it,
                // it must not turn this wait into a spin.)
                let reroute = self.allow_local && self.shared.reroute.load(Relaxed);
                if st.queue.is_empty() && !st.closed && !reroute {
                    let _unused = match deadline {
                        Some(d) if now >= d => None,
                        Some(d) => Some(
                            self.shared
                                .cv
                                .wait_timeout(st, d - now)
                                .unwrap_or_else(|e| e.into_inner())
                                .0,
                        ),
                        None => Some(self.shared.cv.wait(st).unwrap_or_else(|e| e.into_inner())),
                    };
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let st = self.shared.lock();
                if st.queue.is_empty() && !st.closed {
                    return Err(ZenohError::Timeout(timeout.unwrap_or_default(), "a frame"));
                }
            }
        }
    }

    /// Connect to, or leave, the local channel as the publishers alive ask.
    fn reroute(&self, route: &mut Route) -> Result<()> {
        let wanted = {
            let st = self.shared.lock();
            Shared::wanted_local(&st)
        };
        match (&route.local, wanted) {
            (None, Some(zid)) if !route.refused.contains(&zid) => {
                let name = crate::local::channel_name(&zid);
                match framebus_channel::Subscriber::connect(&name, Duration::from_millis(500)) {
                    Ok(mut sub) => {
                        // A pool with a slot hook (pinned for a GPU) hooks the
                        // publisher's slots this route maps as well.
                        if let Some(h) = self.pool.hook() {
                            sub.set_slot_hook(h.clone());
                        }
                        let lossless =
                            matches!(sub.mode(), framebus_channel::Mode::Lossless { .. });
                        route.local = Some(LocalRoute {
                            zid,
                            sub,
                            lossless,
                            first: None,
                            progress: Instant::now(),
                            switched: false,
                        });
                        self.shared.reroute.store(true, Relaxed); // finish the switch
                    }
                    Err(_) => {
                        route.refused.insert(zid);
                    }
                }
            }
            // Another publisher came (or this one's token went while its
            // channel is open: the channel says `Closed` after its queue).
            (Some(lr), Some(zid)) if lr.zid != zid => self.leave_local(route)?,
            (Some(lr), None) if self.shared.lock().alive.len() > 1 || !lr.switched => {
                self.leave_local(route)?
            }
            _ => {}
        }
        Ok(())
    }

    /// A frame from the local channel, finishing the switch from Zenoh first.
    fn recv_local(
        &self,
        lr: &mut LocalRoute,
        data: &mut Option<DataSub>,
        until: Option<Instant>,
    ) -> Result<Option<Frame>> {
        let slice = |until: Option<Instant>| {
            until.map_or(LOCAL_SLICE, |u| u.saturating_duration_since(Instant::now()))
        };
        let channel = |e: framebus_channel::ChannelError| match e {
            framebus_channel::ChannelError::Timeout(..) => {
                ZenohError::Timeout(Duration::ZERO, "a frame")
            }
            framebus_channel::ChannelError::Closed(_) => self.closed(CloseReason::PublisherGone),
            e => ZenohError::zenoh("local channel", e),
        };
        if !lr.switched {
            if lr.lossless {
                if lr.first.is_none() {
                    lr.first = lr.sub.try_recv().map_err(channel)?;
                }
                let Some(first) = &lr.first else {
                    // Nothing on the channel yet: Zenoh still brings frames.
                    self.wait_zenoh(slice(until));
                    return Ok(None);
                };
                let owed = first.seq().saturating_sub(1);
                let caught_up = owed == 0 || self.shared.lock().last_seq.is_some_and(|l| l >= owed);
                if !caught_up && lr.progress.elapsed() < SWITCH_GRACE {
                    self.wait_zenoh(slice(until));
                    return Ok(None);
                }
            }
            self.switch_to_local(lr, data);
            if let Some(f) = lr.first.take() {
                if let Some(f) = self.take_local(f) {
                    return Ok(Some(f));
                }
            }
        }
        let f = lr.sub.recv(Some(slice(until))).map_err(channel)?;
        Ok(self.take_local(f))
    }

    /// Wait up to `d` for a Zenoh sample (or a liveliness change).
    fn wait_zenoh(&self, d: Duration) {
        let st = self.shared.lock();
        if st.queue.is_empty() && !st.closed {
            let _unused = self.shared.cv.wait_timeout(st, d);
        }
    }

    /// Withdraw the Zenoh subscription: from now on the channel serves.
    fn switch_to_local(&self, lr: &mut LocalRoute, data: &mut Option<DataSub>) {
        {
            let mut st = self.shared.lock();
            st.zenoh_off = true;
            if !lr.lossless {
                st.replaced += st.queue.len() as u64;
                st.queue.clear();
            }
        }
        self.shared.cv.notify_all(); // a blocked lossless callback returns
        lr.switched = true;
        if let Some(d) = data.take() {
            let _ = d.undeclare().wait();
        }
    }

    /// A channel frame, unless Zenoh delivered it already.
    fn take_local(&self, f: Frame) -> Option<Frame> {
        let mut st = self.shared.lock();
        if st.last_seq.is_some_and(|l| f.seq() <= l) {
            return None;
        }
        Shared::note_seq(&mut st, f.seq());
        st.stats.received += 1;
        st.stats.local += 1;
        Some(f)
    }

    /// Back to Zenoh: declare the data subscription again, drop the channel.
    fn leave_local(&self, route: &mut Route) -> Result<()> {
        if let Some(mut lr) = route.local.take() {
            lr.sub.close();
        }
        if route.data.is_none() {
            let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = session.as_ref() {
                route.data = Some(declare_data(s, &self.ke, &self.shared)?);
            }
        }
        self.shared.lock().zenoh_off = false;
        self.shared.reroute.store(true, Relaxed);
        Ok(())
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
        let here = wire::realtime_offset_ns();
        let timestamp_ns = wire::local_timestamp_ns(meta.timestamp_ns, meta.unix_ns, here);
        let mut frame = Frame::new(lease, layout)?.with_meta(timestamp_ns, meta.seq);
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
        Shared::note_seq(&mut st, meta.seq);
        st.stats.received += 1;
        st.stats.wire_bytes += payload.len() as u64;
        st.stats.slot_bytes += layout.byte_len() as u64;
        st.stats.decode_ns += t0.elapsed().as_nanos() as u64;
        st.stats.rebased += u64::from(timestamp_ns != meta.timestamp_ns);
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
        {
            // A recv holds the route for at most one wait slice after the notify.
            let mut route = self.route.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(mut lr) = route.local.take() {
                lr.sub.close();
            }
            if let Some(d) = route.data.take() {
                let _ = d.undeclare().wait();
            }
        }
        if let Some(t) = self.token.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.undeclare().wait();
        }
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
