//! The publishing end of a channel.
//!
//! A `Publisher` owns the rendezvous socket and one background thread that
//! accepts subscribers, reads their `RELEASE` messages and notices hang-ups
//! (`kill -9` included: the kernel closes the socket, `poll` reports it, and
//! that subscriber's pins are dropped at once). `send` runs on the caller's
//! thread: it sends the slot's memfd to each subscriber that does not have it
//! yet, keeps a [`Lease`] clone per subscriber (the pin), writes a descriptor
//! into the subscriber's control block and rings its doorbell if it sleeps.
//!
//! Lock order: `send_lock` (serialises senders, held while blocking on a full
//! lossless queue) before `state`. The `state` lock is never held while
//! sleeping. Leases are dropped outside it.

use crate::shm::{Control, DescValue};
use crate::transport::{time_left, wait_on};
use crate::wire::{self, Msg, Recv};
use crate::{ChannelError, Mode, Result};
use framebus_core::{Frame, FramePool, Lease, PixelFormat};
use rustix::event::PollFlags;
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
// Keys are slot ids and tickets this process makes itself (no HashDoS to
// guard against): FxHash instead of SipHash, whose code was ~10 % of the
// instruction-cache misses of a cold send (callgrind).
use rustc_hash::FxHashMap;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// Descriptors in each control block's ring (≥ any lossless depth).
pub const RING: u32 = 256;
/// Default size of the slot table (distinct slots a subscriber keeps mapped).
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
    /// Size of the slot table: distinct slots that can be in flight at once.
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
}

struct Entry {
    slot_id: u64,
    gen: u32,
    pins: u32,
    /// Last `send` of this slot: least recently sent is evicted first, and a
    /// slot idle for `idle_slot_timeout` is retired.
    last_sent: Instant,
}

/// Maps the slots being sent (by core slot id) to small table indexes that
/// subscribers cache fds under. A slot keeps its index while it is reused, so
/// its fd crosses the socket once per subscriber.
struct SlotTable {
    by_id: FxHashMap<u64, u32>,
    entries: Vec<Option<Entry>>,
    gens: Vec<u32>,
}

impl SlotTable {
    fn new(max: u32) -> SlotTable {
        SlotTable {
            by_id: FxHashMap::default(),
            entries: (0..max).map(|_| None).collect(),
            gens: vec![0; max as usize],
        }
    }

    fn entry_for(&mut self, slot_id: u64) -> Result<(u32, u32)> {
        let now = Instant::now();
        if let Some(&i) = self.by_id.get(&slot_id) {
            let e = self.entries[i as usize].as_mut().expect("indexed entry");
            e.last_sent = now;
            return Ok((i, e.gen));
        }
        let free = self.entries.iter().position(Option::is_none);
        let i = match free {
            Some(i) => i,
            None => {
                // Evict the least recently used slot nobody pins.
                let victim = self
                    .entries
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| e.as_ref().map(|e| (i, e)))
                    .filter(|(_, e)| e.pins == 0)
                    .min_by_key(|(_, e)| e.last_sent)
                    .map(|(i, _)| i)
                    .ok_or(ChannelError::TooManySlots {
                        max: self.entries.len(),
                    })?;
                let old = self.entries[victim].take().expect("victim exists");
                self.by_id.remove(&old.slot_id);
                victim
            }
        };
        self.gens[i] = self.gens[i].wrapping_add(1).max(1);
        let gen = self.gens[i];
        self.entries[i] = Some(Entry {
            slot_id,
            gen,
            pins: 0,
            last_sent: now,
        });
        self.by_id.insert(slot_id, i as u32);
        Ok((i as u32, gen))
    }

    /// Retire entries unused for `idle` and pinned by nobody; returns (index, gen).
    fn take_idle(&mut self, idle: Duration) -> Vec<(u32, u32)> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (i, slot) in self.entries.iter_mut().enumerate() {
            if let Some(e) = slot {
                if e.pins == 0 && now.duration_since(e.last_sent) >= idle {
                    out.push((i as u32, e.gen));
                    self.by_id.remove(&e.slot_id);
                    *slot = None;
                }
            }
        }
        out
    }

    fn pin(&mut self, index: u32) {
        if let Some(Some(e)) = self.entries.get_mut(index as usize) {
            e.pins += 1;
        }
    }

    fn unpin(&mut self, index: u32) {
        if let Some(Some(e)) = self.entries.get_mut(index as usize) {
            e.pins = e.pins.saturating_sub(1);
        }
    }
}

struct SubConn {
    id: u64,
    sock: Arc<OwnedFd>,
    ctrl: Arc<Control>,
    doorbell: OwnedFd,
    /// Generation of each table index this subscriber has the fd of (0 = none).
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
}

struct Shared {
    name: String,
    cfg: PublisherConfig,
    state: Mutex<State>,
    changed: Condvar,
    wake: OwnedFd,
}

impl State {
    /// Subscribers connected and receiving.
    fn receiving(&self) -> usize {
        self.subs.iter().filter(|s| s.active()).count()
    }
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
            }),
            cfg,
            changed: Condvar::new(),
            wake,
        });
        let sh = shared.clone();
        std::thread::Builder::new()
            .name(format!("framebus-pub-{name}"))
            .spawn(move || serve(sh, listener))
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
        s.pinned_slots = st
            .table
            .entries
            .iter()
            .flatten()
            .filter(|e| e.pins > 0)
            .count();
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
        self.collect_releases();
        let mut start = None; // read the clock only if we have to wait
        let mut ro_fd: Option<OwnedFd> = None;
        loop {
            let mut st = self.shared.lock();
            if let Some(wait) = self.check_room(&mut st, on_full, &mut start)? {
                drop(st);
                wait.sleep();
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
                !s.dead && s.ctrl.header().releases.load(Ordering::Acquire) != s.releases_seen
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
            read_messages(&self.shared, *id, sock, PollFlags::empty(), &mut dropped);
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
            return Err(ChannelError::Closed(self.shared.name.clone()));
        }
        let Mode::Lossless { depth } = self.shared.cfg.mode else {
            return Ok(None);
        };
        for s in st.subs.iter_mut().filter(|s| s.active()) {
            let h = s.ctrl.header();
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
                ctrl: s.ctrl.clone(),
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
            if s.sent_gen[index as usize] != gen {
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
                s.sent_gen[index as usize] = gen;
            }
            s.pins.insert(ticket, (lease.clone(), index));
            table.pin(index);
            let h = s.ctrl.header();
            match mode {
                Mode::Latest => {
                    s.ctrl.desc(ticket).write(&desc);
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
                    s.ctrl.desc(u64::from(s.wpos)).write(&desc);
                    s.wpos = s.wpos.wrapping_add(1);
                    h.write_pos.store(s.wpos, Ordering::Release);
                }
            }
            fence(Ordering::SeqCst);
            if h.sub_waiting.load(Ordering::SeqCst) != 0 {
                wire::ring_doorbell(s.doorbell.as_fd());
            }
        }
        stats.sent += 1;
        drop(st);
        drop(unpinned);
        Ok(ticket)
    }

    /// Stop accepting and sending. Subscribers get every frame already sent,
    /// then `Closed`. Pins stay until each subscriber releases or hangs up, so
    /// no slot is reused under a reader. The name is free when this returns.
    /// A pool the publisher made itself is closed too (its free slots unmapped).
    pub fn close(&self) {
        if rustix::process::getpid() != self.pid {
            return; // a fork()ed copy: the channel belongs to the parent
        }
        if self.owns_pool {
            self.pool.close();
        }
        let mut st = self.shared.lock();
        if !st.closed {
            st.closed = true;
            for s in &st.subs {
                s.ctrl.header().closed.store(1, Ordering::SeqCst);
                let _ = rustix::net::shutdown(&*s.sock, rustix::net::Shutdown::Write);
                wire::ring_doorbell(s.doorbell.as_fd());
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

/// The background thread: accept, read releases, reap hung-up subscribers.
fn serve(sh: Arc<Shared>, listener: OwnedFd) {
    let mut listener = Some(listener);
    loop {
        let socks: Vec<(u64, Arc<OwnedFd>)> = {
            let mut st = sh.lock();
            if st.closed && listener.is_some() {
                listener = None; // the name is free from here on
                st.listener_open = false;
                sh.changed.notify_all();
            }
            if st.closed && st.subs.is_empty() {
                return;
            }
            st.subs.iter().map(|s| (s.id, s.sock.clone())).collect()
        };
        let mut fds = vec![sh.wake.as_fd()];
        if let Some(l) = &listener {
            fds.push(l.as_fd());
        }
        fds.extend(socks.iter().map(|(_, s)| s.as_fd()));
        let housekeeping =
            (sh.cfg.idle_slot_timeout / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let revents = match wire::wait_readable(&fds, Some(housekeeping)) {
            Ok(r) => r,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if !revents[0].is_empty() {
            wire::clear_doorbell(sh.wake.as_fd());
        }
        let base = 1 + usize::from(listener.is_some());
        if let Some(l) = &listener {
            if !revents[1].is_empty() {
                accept_all(&sh, l);
            }
        }
        let mut dropped = Vec::new();
        for (k, (id, sock)) in socks.iter().enumerate() {
            let ev = revents[base + k];
            if ev.is_empty() {
                continue;
            }
            read_messages(&sh, *id, sock, ev, &mut dropped);
        }
        reap(&sh, &mut dropped);
        drop(dropped); // leases go back to their pools outside the lock
        retire_idle_slots(&sh);
    }
}

/// Tell subscribers to close the fds of slots nobody used for a while.
fn retire_idle_slots(sh: &Shared) {
    let mut st = sh.lock();
    if st.closed {
        return; // sockets are shut for writing; subscribers drop fds on exit
    }
    let State { subs, table, .. } = &mut *st;
    for (index, gen) in table.take_idle(sh.cfg.idle_slot_timeout) {
        for s in subs.iter_mut().filter(|s| s.active()) {
            if s.sent_gen[index as usize] == gen {
                s.sent_gen[index as usize] = 0;
                if wire::send_msg(s.sock.as_fd(), &Msg::Forget { index, gen }, &[]).is_err() {
                    s.cut_off();
                }
            }
        }
    }
}

fn accept_all(sh: &Arc<Shared>, listener: &OwnedFd) {
    loop {
        let sock = match rustix::net::accept_with(
            listener,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        ) {
            Ok(s) => s,
            Err(_) => return, // EAGAIN (drained) or a transient error
        };
        if wire::check_peer_uid(sock.as_fd(), &sh.name).is_err() {
            continue; // another user: hang up
        }
        let _ = add_subscriber(sh, sock);
    }
}

fn add_subscriber(sh: &Arc<Shared>, sock: OwnedFd) -> Result<()> {
    let ctrl = Control::create(RING)?;
    let doorbell = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .map_err(|e| ChannelError::os("eventfd", e))?;
    let mut st = sh.lock();
    if st.closed {
        return Ok(());
    }
    let (mode, depth) = match sh.cfg.mode {
        Mode::Latest => (Mode::Latest.code(), 0),
        m @ Mode::Lossless { depth } => (m.code(), depth),
    };
    let hello = Msg::Hello {
        version: wire::PROTOCOL_VERSION,
        mode,
        depth,
        ring: RING,
        first_ticket: st.next_ticket,
        max_slots: sh.cfg.max_slots,
    };
    wire::send_msg(sock.as_fd(), &hello, &[ctrl.fd(), doorbell.as_fd()])
        .map_err(|e| ChannelError::os("send hello", e))?;
    let id = st.next_sub_id;
    st.next_sub_id += 1;
    st.subs.push(SubConn {
        id,
        sock: Arc::new(sock),
        ctrl: Arc::new(ctrl),
        doorbell,
        sent_gen: vec![0; sh.cfg.max_slots as usize],
        pins: FxHashMap::default(),
        wpos: 0,
        releases_seen: 0,
        leaving: false,
        dead: false,
    });
    sh.changed.notify_all();
    Ok(())
}

fn read_messages(
    sh: &Arc<Shared>,
    id: u64,
    sock: &OwnedFd,
    ev: PollFlags,
    dropped: &mut Vec<Lease>,
) {
    let mut releases = Vec::new();
    let mut bye = false;
    let mut dead = false;
    // Bounded batch: a flooding peer cannot starve the other subscribers.
    for _ in 0..4096 {
        match wire::recv_msg(sock.as_fd()) {
            Ok(Recv::Msg(Msg::Release { ticket }, _)) => releases.push(ticket),
            Ok(Recv::Msg(Msg::Bye, _)) => bye = true,
            Ok(Recv::Empty) => break,
            // EOF, garbage or an unexpected message: treat as a hang-up.
            Ok(Recv::Eof) | Ok(Recv::Msg(..)) | Err(_) => {
                dead = true;
                break;
            }
        }
    }
    if !dead && ev.intersects(PollFlags::HUP | PollFlags::ERR) {
        dead = true;
    }
    let mut st = sh.lock();
    let State { subs, table, .. } = &mut *st;
    if let Some(s) = subs.iter_mut().find(|s| s.id == id) {
        s.releases_seen = s.releases_seen.wrapping_add(releases.len() as u32);
        for t in releases {
            if let Some((l, i)) = s.pins.remove(&t) {
                table.unpin(i);
                dropped.push(l);
            }
        }
        if bye && !s.leaving {
            s.leaving = true;
            wake_blocked_sender(&s.ctrl); // it may be waiting for room in this queue
        }
        s.dead |= dead;
    }
}

/// Wake a sender sleeping on this subscriber's `read_pos` (it re-checks).
fn wake_blocked_sender(ctrl: &Control) {
    let _ = rustix::thread::futex::wake(
        &ctrl.header().read_pos,
        rustix::thread::futex::Flags::empty(),
        i32::MAX as u32,
    );
}

/// Remove dead subscribers: drop their pins and wake a sender blocked on them.
fn reap(sh: &Arc<Shared>, dropped: &mut Vec<Lease>) {
    let mut st = sh.lock();
    if !st.subs.iter().any(|s| s.dead) {
        return;
    }
    let State {
        subs, table, stats, ..
    } = &mut *st;
    subs.retain_mut(|s| {
        if !s.dead {
            return true;
        }
        for (_, (l, i)) in s.pins.drain() {
            table.unpin(i);
            dropped.push(l);
        }
        stats.disconnected += 1;
        wake_blocked_sender(&s.ctrl);
        false
    });
    sh.changed.notify_all();
}
