//! The publishing end of a channel: the [`Publisher`] API and what `send`
//! does on the caller's thread.
//!
//! A `Publisher` owns the rendezvous socket and one background thread
//! ([`serve`]: accepts subscribers, reads their releases, reaps hang-ups).
//! `send` runs on the caller's thread: it gives the slot an index in the
//! [`slot_table`], sends the slot's memfd to each subscriber that does not have
//! it yet, keeps a [`Lease`] clone per subscriber (the pin), writes a
//! descriptor into the subscriber's control block and rings its doorbell if it
//! sleeps.
//!
//! Lock order: `send_lock` (serialises senders, held while blocking on a full
//! lossless queue) before `state`. The `state` lock is never held while
//! sleeping. Leases are dropped outside it.

mod serve;
mod slot_table;

use crate::shm::{Control, DescValue};
use crate::transport::{time_left, wait_on};
use crate::wire::{self, Msg};
use crate::{ChannelError, CloseReason, Mode, Result};
use framebus_core::{Frame, FramePool, Lease, PixelFormat};
use rustix::event::PollFlags;
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
// Keys are tickets this process makes itself (no HashDoS to guard against):
// FxHash instead of SipHash, whose code was ~10 % of the instruction-cache
// misses of a cold send (callgrind).
use rustc_hash::FxHashMap;
use slot_table::SlotTable;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// Descriptors in each control block's ring (≥ any lossless depth).
pub const RING: u32 = 256;
/// Default `max_slots`: slot-table entries kept for slots nobody pins.
pub const DEFAULT_MAX_SLOTS: u32 = 64;

/// Lossless mode: what `send` does when a subscriber's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFull {
    /// Wait for room, up to the timeout (`None` = forever).
    Block(Option<Duration>),
    /// Fail at once with [`ChannelError::Full`].
    Raise,
}

/// How a publisher behaves.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    pub mode: Mode,
    pub on_full: OnFull,
    /// Slot-table entries kept for slots nobody pins (1..=4096): bounds the
    /// slot fds (and so the stale memory) an idle subscriber keeps. The table
    /// grows past it while every entry is pinned (a lossless queue deeper than
    /// this, frames held by subscribers), up to [`crate::wire::MAX_SLOT_TABLE`],
    /// so it never limits `depth` or the frames subscribers hold.
    pub max_slots: u32,
    /// A slot not sent for this long (and pinned by nobody) is retired from the
    /// table: subscribers close its fd, so memory the pool has since unmapped is
    /// really freed. A slot sent again later just crosses the socket again.
    pub idle_slot_timeout: Duration,
    /// The publisher's own pool (for [`Publisher::acquire`]); `None` = a new
    /// unbounded pool. Pass a capture pool here to send captures with no copy.
    pub pool: Option<FramePool>,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            mode: Mode::Latest,
            on_full: OnFull::Block(None),
            max_slots: DEFAULT_MAX_SLOTS,
            idle_slot_timeout: Duration::from_secs(2),
            pool: None,
        }
    }
}

/// Counters of a publisher.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Subscribers connected and receiving.
    pub subscribers: usize,
    /// Frames sent.
    pub sent: u64,
    /// Latest mode: pending frames replaced before their subscriber took them.
    pub replaced: u64,
    /// Subscribers that hung up or were dropped (their pins reclaimed).
    pub disconnected: u64,
    /// Frames pinned by subscribers right now (pins summed over subscribers).
    pub pins: usize,
    /// Distinct slots pinned right now.
    pub pinned_slots: usize,
    /// Calls to `send` blocked right now waiting for room in a full lossless queue.
    pub waiting_senders: usize,
}

/// A subscriber's control block and doorbell.
struct Link {
    ctrl: Arc<Control>,
    doorbell: OwnedFd,
}

struct SubConn {
    id: u64,
    sock: Arc<OwnedFd>,
    /// `None` once the channel is closed: only the socket is kept, to read the
    /// releases of the frames this subscriber still pins.
    link: Option<Link>,
    /// Generation of each table index this subscriber has the fd of (0 = none;
    /// grows with the table).
    sent_gen: Vec<u32>,
    /// ticket → (the pin, table index).
    pins: FxHashMap<u64, (Lease, u32)>,
    wpos: u32,
    /// RELEASE messages read so far (compared with the header's hint).
    releases_seen: u32,
    leaving: bool,
    dead: bool,
}

impl SubConn {
    fn active(&self) -> bool {
        !self.leaving && !self.dead
    }

    /// Stop delivering to a subscriber that broke the protocol or fell too far
    /// behind. It sees end-of-stream (then `Closed`), but its pins stay until it
    /// releases its frames or hangs up: a frame it holds is never reused.
    fn cut_off(&mut self) {
        self.leaving = true;
        let _ = rustix::net::shutdown(&*self.sock, rustix::net::Shutdown::Write);
    }
}

struct State {
    subs: Vec<SubConn>,
    table: SlotTable,
    next_ticket: u64,
    next_sub_id: u64,
    closed: bool,
    listener_open: bool,
    stats: PublisherStats,
    /// What `framebus ls` is told (the info socket): the last frame's width,
    /// height and format code + 1, when it was sent, the send period.
    last_frame: (u32, u32, u32),
    last_sent_ns: u64,
    period_ns: u64,
}

struct Shared {
    name: String,
    cfg: PublisherConfig,
    state: Mutex<State>,
    changed: Condvar,
    wake: OwnedFd,
    /// Senders blocked on a full lossless queue right now.
    waiting: AtomicUsize,
    /// A handle on the publisher's pool, for the bytes it maps (info socket).
    pool: FramePool,
}

impl State {
    /// Subscribers connected and receiving.
    fn receiving(&self) -> usize {
        self.subs.iter().filter(|s| s.active()).count()
    }

    /// Remember the frame just sent, for the info socket: its geometry, and
    /// the send period (an exponential average, forgotten after a 1 s pause).
    fn note_send(&mut self, d: &DescValue) {
        self.last_frame = (d.width, d.height, d.format + 1);
        let dt = d.sent_ns.saturating_sub(self.last_sent_ns);
        self.period_ns = if self.last_sent_ns == 0 || dt > 1_000_000_000 {
            0
        } else if self.period_ns == 0 {
            dt
        } else {
            self.period_ns - self.period_ns / 8 + dt / 8
        };
        self.last_sent_ns = d.sent_ns;
    }
}

/// Bind and listen on the channel's info socket (`wire::info_address`);
/// `None` if that fails.
fn bind_info_listener(name: &str) -> Option<OwnedFd> {
    let addr = wire::info_address(name).ok()?;
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .ok()?;
    rustix::net::bind(&sock, &addr).ok()?;
    rustix::net::listen(&sock, 16).ok()?;
    Some(sock)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending end of a channel. See the crate docs.
pub struct Publisher {
    shared: Arc<Shared>,
    pool: FramePool,
    /// The pool was made here (not passed in), so `close` closes it too.
    owns_pool: bool,
    send_lock: Mutex<()>,
    /// The process that made it: a `fork()`ed child's copy must not close the
    /// parent's channel (the sockets and control blocks are shared).
    pid: rustix::process::Pid,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("name", &self.shared.name)
            .field("mode", &self.shared.cfg.mode)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Publisher {
    /// Serve channel `name`. Fails with [`ChannelError::NameInUse`] if a live
    /// publisher serves it already (a dead one's name is free again).
    pub fn new(name: &str, mut cfg: PublisherConfig) -> Result<Publisher> {
        let addr = wire::address(name)?;
        if let Mode::Lossless { depth } = cfg.mode {
            if depth == 0 || depth > RING {
                return Err(ChannelError::InvalidArgument {
                    what: "depth",
                    value: depth.to_string(),
                    why: "must be 1..=256",
                });
            }
        }
        if cfg.max_slots == 0 || cfg.max_slots > 4096 {
            return Err(ChannelError::InvalidArgument {
                what: "max_slots",
                value: cfg.max_slots.to_string(),
                why: "must be 1..=4096",
            });
        }
        let listener = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| ChannelError::os("socket", e))?;
        match rustix::net::bind(&listener, &addr) {
            Ok(()) => {}
            Err(rustix::io::Errno::ADDRINUSE) => {
                return Err(ChannelError::NameInUse(name.to_owned()))
            }
            Err(e) => return Err(ChannelError::os("bind", e)),
        }
        rustix::net::listen(&listener, 64).map_err(|e| ChannelError::os("listen", e))?;
        // The info socket is optional: a squatter on it (another user) hides
        // this channel's figures from `framebus ls`, nothing more.
        let info_listener = bind_info_listener(name);
        let wake = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(|e| ChannelError::os("eventfd", e))?;
        // The pool lives in `Publisher` only (the thread has no use for it).
        let owns_pool = cfg.pool.is_none();
        let pool = cfg.pool.take().unwrap_or_default();
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            state: Mutex::new(State {
                subs: Vec::new(),
                table: SlotTable::new(cfg.max_slots),
                next_ticket: 1,
                next_sub_id: 1,
                closed: false,
                listener_open: true,
                stats: PublisherStats::default(),
                last_frame: (0, 0, 0),
                last_sent_ns: 0,
                period_ns: 0,
            }),
            cfg,
            changed: Condvar::new(),
            wake,
            waiting: AtomicUsize::new(0),
            pool: pool.clone(),
        });
        let sh = shared.clone();
        std::thread::Builder::new()
            .name(format!("framebus-pub-{name}"))
            .spawn(move || serve::serve(sh, listener, info_listener))
            .map_err(|e| ChannelError::Os {
                op: "spawn publisher thread",
                source: e,
            })?;
        Ok(Publisher {
            shared,
            pool,
            owns_pool,
            send_lock: Mutex::new(()),
            pid: rustix::process::getpid(),
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn mode(&self) -> Mode {
        self.shared.cfg.mode
    }

    /// The publisher's own pool. Frames acquired from it (or captured into it)
    /// are sent with no copy, like frames from any other framebus pool.
    pub fn pool(&self) -> &FramePool {
        &self.pool
    }

    /// A writable frame from the publisher's pool. Fill it, then `send` it.
    pub fn acquire(&self, width: usize, height: usize, format: PixelFormat) -> Result<Frame> {
        self.collect_releases();
        Ok(self.pool.acquire_frame(width, height, format, None)?)
    }

    /// Subscribers connected and receiving.
    pub fn subscribers(&self) -> usize {
        self.shared.lock().receiving()
    }

    pub fn stats(&self) -> PublisherStats {
        let st = self.shared.lock();
        let mut s = st.stats.clone();
        s.subscribers = st.receiving();
        s.pins = st.subs.iter().map(|s| s.pins.len()).sum();
        s.pinned_slots = st.table.pinned();
        s.waiting_senders = self.shared.waiting.load(Ordering::Relaxed);
        s
    }

    /// Wait until at least `n` subscribers are connected, up to `timeout`.
    pub fn wait_for_subscribers(&self, n: usize, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            let k = st.receiving();
            if k >= n {
                return Ok(k);
            }
            let left = time_left(Some(deadline), Some(timeout), "subscribers")?;
            st = wait_on(&self.shared.changed, st, left);
        }
    }

    /// Publish `frame` to every subscriber, with no copy. Returns its ticket
    /// (the channel-wide sequence number). The frame must not be written after
    /// this: subscribers may be reading it.
    pub fn send(&self, frame: &Frame) -> Result<u64> {
        self.send_with(frame, self.shared.cfg.on_full)
    }

    /// [`Publisher::send`] with this call's own policy for a full lossless queue.
    /// A `Full` error means the frame went to nobody, so retrying is safe.
    pub fn send_with(&self, frame: &Frame, on_full: OnFull) -> Result<u64> {
        let ro_src = shareable_fd(frame)?;
        let _serial = self.send_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut start = None; // read the clock only if we have to wait
        let mut ro_fd: Option<OwnedFd> = None;
        loop {
            // Also after a wait: the reader that made room may have released
            // a frame too, and its slot-table entry is then free for this one.
            self.collect_releases();
            let mut st = self.shared.lock();
            if let Some(wait) = self.check_room(&mut st, on_full, &mut start)? {
                drop(st);
                self.shared.waiting.fetch_add(1, Ordering::Relaxed);
                wait.sleep();
                self.shared.waiting.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            return self.deliver(st, frame, ro_src, &mut ro_fd);
        }
    }

    /// [`Publisher::send`] if it can be done without waiting; `Ok(None)` (and
    /// nothing sent) when a lossless queue is full or another thread is in the
    /// middle of a send. Never blocks, so a binding can call it without
    /// giving up its interpreter lock, and fall back to `send` on `None`.
    pub fn try_send(&self, frame: &Frame) -> Result<Option<u64>> {
        let ro_src = shareable_fd(frame)?;
        let _serial = match self.send_lock.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(None),
        };
        self.collect_releases();
        let mut st = self.shared.lock();
        match self.check_room(&mut st, OnFull::Raise, &mut None) {
            Ok(_) => {} // Raise never asks to wait
            Err(ChannelError::Full { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        self.deliver(st, frame, ro_src, &mut None).map(Some)
    }

    /// Read queued `RELEASE` messages now, on the caller's thread, so a slot
    /// released a moment ago is free for this acquire/send even if the
    /// background thread has not run yet (it would on a busy machine).
    fn collect_releases(&self) {
        let socks: Vec<(u64, Arc<OwnedFd>)> = {
            let st = self.shared.lock();
            // Only sockets whose subscriber says it sent releases we have not
            // read: no syscall (and no allocation) in the steady state.
            let unread = |s: &&SubConn| {
                !s.dead
                    && s.link.as_ref().is_some_and(|l| {
                        l.ctrl.header().releases.load(Ordering::Acquire) != s.releases_seen
                    })
            };
            if !st.subs.iter().any(|s| unread(&s)) {
                return;
            }
            st.subs
                .iter()
                .filter(unread)
                .map(|s| (s.id, s.sock.clone()))
                .collect()
        };
        let mut dropped = Vec::new();
        for (id, sock) in &socks {
            serve::read_messages(&self.shared, *id, sock, PollFlags::empty(), &mut dropped);
        }
        drop(dropped);
    }

    /// `None` when the frame can be delivered now (latest mode, or every
    /// receiving lossless subscriber has room), else what to wait on; an error
    /// when the channel is closed, or full for `OnFull::Raise` / the timeout.
    fn check_room(
        &self,
        st: &mut State,
        on_full: OnFull,
        start: &mut Option<Instant>,
    ) -> Result<Option<RoomWait>> {
        if st.closed {
            return Err(ChannelError::closed(
                &self.shared.name,
                CloseReason::PublisherClosed,
            ));
        }
        let Mode::Lossless { depth } = self.shared.cfg.mode else {
            return Ok(None);
        };
        for s in st.subs.iter_mut().filter(|s| s.active()) {
            let Some(link) = &s.link else { continue };
            let h = link.ctrl.header();
            let read = h.read_pos.load(Ordering::Acquire);
            let queued = s.wpos.wrapping_sub(read);
            if queued > depth {
                // The subscriber wrote a read position we never reached.
                s.cut_off();
                continue;
            }
            if queued < depth {
                continue;
            }
            let full = |waited| ChannelError::Full {
                name: self.shared.name.clone(),
                subscriber: s.id,
                depth,
                waited,
            };
            let now = Instant::now();
            let start = *start.get_or_insert(now);
            let deadline = match on_full {
                OnFull::Raise => return Err(full(None)),
                OnFull::Block(t) => t.map(|t| start + t),
            };
            if deadline.is_some_and(|d| now >= d) {
                return Err(full(Some(now - start)));
            }
            // Bounded sleeps: a hung-up subscriber is also woken by the thread.
            let left = deadline.map_or(Duration::from_millis(100), |d| {
                (d - now).min(Duration::from_millis(100))
            });
            return Ok(Some(RoomWait {
                ctrl: link.ctrl.clone(),
                seen: read,
                left,
            }));
        }
        Ok(None)
    }

    fn deliver(
        &self,
        mut st: MutexGuard<'_, State>,
        frame: &Frame,
        ro_src: rustix::fd::BorrowedFd<'_>,
        ro_fd: &mut Option<OwnedFd>,
    ) -> Result<u64> {
        let lease = frame.lease();
        let layout = frame.layout();
        let (index, gen) = st.table.entry_for(lease.slot_id())?;
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        let mode = self.shared.cfg.mode;
        let desc = DescValue {
            ticket,
            timestamp_ns: frame.timestamp_ns(),
            // Received frames carry the channel's sequence number (gaps = skipped).
            seq: ticket,
            sent_ns: wire::monotonic_ns(),
            stride: layout.stride as u64,
            index,
            gen,
            width: layout.width as u32,
            height: layout.height as u32,
            format: layout.format as u32,
        };
        let mut unpinned = Vec::new();
        let State {
            subs, table, stats, ..
        } = &mut *st;
        for s in subs.iter_mut().filter(|s| s.active()) {
            let Some(link) = &s.link else { continue };
            let i = index as usize;
            if s.sent_gen.get(i) != Some(&gen) {
                if ro_fd.is_none() {
                    *ro_fd = Some(wire::reopen_readonly(ro_src)?);
                }
                let fd = ro_fd.as_ref().expect("just set").as_fd();
                let msg = Msg::Slot {
                    index,
                    gen,
                    capacity: lease.capacity() as u64,
                };
                if wire::send_msg(s.sock.as_fd(), &msg, &[fd]).is_err() {
                    // Gone, or so far behind that its socket is full.
                    s.cut_off();
                    continue;
                }
                if s.sent_gen.len() <= i {
                    s.sent_gen.resize(table.len(), 0);
                }
                s.sent_gen[i] = gen;
            }
            s.pins.insert(ticket, (lease.clone(), index));
            table.pin(index);
            let h = link.ctrl.header();
            match mode {
                Mode::Latest => {
                    link.ctrl.desc(ticket).write(&desc);
                    let old = h.mailbox.swap(ticket, Ordering::AcqRel);
                    if old != 0 {
                        if let Some((l, i)) = s.pins.remove(&old) {
                            table.unpin(i);
                            unpinned.push(l);
                            stats.replaced += 1;
                        }
                    }
                }
                Mode::Lossless { .. } => {
                    link.ctrl.desc(u64::from(s.wpos)).write(&desc);
                    s.wpos = s.wpos.wrapping_add(1);
                    h.write_pos.store(s.wpos, Ordering::Release);
                }
            }
            fence(Ordering::SeqCst);
            if h.sub_waiting.load(Ordering::SeqCst) != 0 {
                wire::ring_doorbell(link.doorbell.as_fd());
            }
        }
        stats.sent += 1;
        st.note_send(&desc);
        drop(st);
        drop(unpinned);
        Ok(ticket)
    }

    /// Stop accepting and sending. Subscribers get every frame already sent,
    /// then `Closed`. Pins stay until each subscriber releases or hangs up, so
    /// no slot is reused under a reader. The name is free when this returns.
    /// A pool the publisher made itself is closed too (its free slots unmapped).
    ///
    /// Everything not pinned goes now: every control block and doorbell, and
    /// the connection of each subscriber that pins nothing. A subscriber that
    /// still pins frames keeps only its socket (to read its releases) until it
    /// releases the last one or hangs up; then the background thread exits.
    /// Sending after this fails with [`ChannelError::Closed`]
    /// ([`CloseReason::PublisherClosed`]).
    pub fn close(&self) {
        if rustix::process::getpid() != self.pid {
            return; // a fork()ed copy: the channel belongs to the parent
        }
        if self.owns_pool {
            self.pool.close();
        }
        let mut st = self.shared.lock();
        let mut gone = Vec::new();
        if !st.closed {
            st.closed = true;
            for s in &st.subs {
                if let Some(link) = &s.link {
                    link.ctrl.header().closed.store(1, Ordering::SeqCst);
                    wire::ring_doorbell(link.doorbell.as_fd());
                }
                let _ = rustix::net::shutdown(&*s.sock, rustix::net::Shutdown::Write);
            }
            // Free what nobody pins: control blocks, doorbells, and the
            // connections of subscribers holding nothing (they see EOF).
            let subs = std::mem::take(&mut st.subs);
            for mut s in subs {
                s.link = None;
                if s.pins.is_empty() {
                    gone.push(s);
                } else {
                    st.subs.push(s);
                }
            }
            wire::ring_doorbell(self.shared.wake.as_fd());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while st.listener_open {
            let Ok(left) = time_left(Some(deadline), None, "the listener to close") else {
                break; // the thread is stuck: give up waiting, the name frees on exit
            };
            st = wait_on(&self.shared.changed, st, left);
        }
        drop(st);
        drop(gone); // sockets close outside the lock
    }

    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }
}

/// The frame's slot fd, which the channel shares with subscribers.
fn shareable_fd(frame: &Frame) -> Result<rustix::fd::BorrowedFd<'_>> {
    let lease = frame.lease();
    lease.fd().ok_or_else(|| ChannelError::InvalidArgument {
        what: "frame",
        value: format!("slot {}", lease.slot_id()),
        why: "its slot has no file descriptor, so it cannot be shared",
    })
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.close();
    }
}

struct RoomWait {
    ctrl: Arc<Control>,
    seen: u32,
    left: Duration,
}

impl RoomWait {
    /// Sleep on the subscriber's read position until it moves (or `left` passes).
    fn sleep(self) {
        let h = self.ctrl.header();
        h.pub_waiting.store(1, Ordering::SeqCst);
        if h.read_pos.load(Ordering::SeqCst) == self.seen {
            let ts = rustix::time::Timespec {
                tv_sec: self.left.as_secs() as i64,
                tv_nsec: self.left.subsec_nanos() as _,
            };
            // AGAIN (moved already), TIMEDOUT and INTR all mean: look again.
            let _ = rustix::thread::futex::wait(
                &h.read_pos,
                rustix::thread::futex::Flags::empty(),
                self.seen,
                Some(&ts),
            );
        }
        h.pub_waiting.store(0, Ordering::SeqCst);
    }
}
