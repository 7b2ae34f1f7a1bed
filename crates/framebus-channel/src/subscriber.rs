//! The receiving end of a channel.
//!
//! A `Subscriber` connects to the publisher's abstract socket, receives its
//! control block and doorbell, and from then on reads descriptors from shared
//! memory. Slot memfds arrive on the socket (once per slot) and are mapped
//! read-only. Each received frame is a core [`Frame`] whose [`Lease`] has this
//! subscriber as its [`SlotHome`]: when the frame's last lease drops (the Rust
//! frame, a Python buffer, a NumPy array, a DLPack capsule …) a `RELEASE`
//! message unpins the slot in the publisher.
//!
//! Everything coming from the publisher is validated: the hello
//! ([`check_hello`]), slot messages ([`check_slot_msg`]; the memfd's shrink
//! seal and real size are checked by `Slot::map_fd`), descriptors
//! ([`frame_layout`]: slot index, generation, pixel format, layout within the
//! slot); a bad value is a [`ChannelError::Corrupt`], never a bad access.
//!
//! `close` frees at once everything no held frame needs: the control block,
//! the doorbell, every cached slot fd and mapping, and — when no frame is held
//! — the socket. A held frame keeps its own mapping and the socket (its
//! release must reach the publisher); the last release closes the socket.

use crate::shm::{Control, DescValue, Header, MAX_RING};
use crate::spin::{Cadence, Spin};
use crate::transport::time_left;
use crate::wire::{self, Msg, Recv, MAX_SLOT_TABLE};
use crate::{ChannelError, CloseReason, Mode, Result};
use framebus_core::{Frame, FrameLayout, Lease, PixelFormat, Slot, SlotHome, SlotHook};
use rustix::event::PollFlags;
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
// Keys are mapping ids of this process (no HashDoS): FxHash, not SipHash.
use rustc_hash::FxHashMap;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Largest slot a subscriber agrees to map (1 TiB: a sanity bound only).
const MAX_SLOT_BYTES: u64 = 1 << 40;
/// Free mappings kept per slot for reuse (so page tables stay warm).
const FREE_MAPPINGS: usize = 2;

struct SlotFd {
    gen: u32,
    fd: OwnedFd,
    capacity: usize,
    free: Vec<Slot>,
}

struct SubState {
    /// The connection; `None` once the subscriber is closed and holds no
    /// frame (closing it is the hang-up that drops all our pins).
    sock: Option<Arc<OwnedFd>>,
    /// The control block, to count sent releases in (the publisher's hint);
    /// `None` after close.
    ctrl: Option<Arc<Control>>,
    /// Slot fds (and free mappings) by table index; grows with the
    /// publisher's table, emptied by close.
    slots: Vec<Option<SlotFd>>,
    /// Mapping id (of our local `Slot`) → (table index, generation, ticket).
    held: FxHashMap<u64, (u32, u32, u64)>,
    /// Releases that could not be sent yet (socket full).
    pending: Vec<u64>,
    /// The publisher hung up.
    eof: bool,
    /// `Subscriber::close` ran.
    closed: bool,
    /// Hooks every mapping made from now on ([`Subscriber::set_slot_hook`]).
    hook: Option<Arc<dyn SlotHook>>,
}

impl SubState {
    /// After close, with no frame held: nothing needs the connection any more.
    fn hang_up_if_done(&mut self) {
        if self.closed && self.held.is_empty() {
            self.sock = None;
            self.pending.clear();
        }
    }
}

/// What received frames share: their [`SlotHome`].
struct Inner {
    name: String,
    state: Mutex<SubState>,
    /// The process that connected: a `fork()`ed child's copy must neither
    /// release the parent's frames nor say goodbye on its socket.
    pid: rustix::process::Pid,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, SubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send_release(&self, st: &mut SubState, ticket: u64) {
        // Sent even after end-of-stream: a publisher that closed (or cut us off)
        // still reads releases; a dead one makes this fail harmlessly.
        st.pending.push(ticket);
        self.flush_releases(st);
    }

    /// Send queued releases until the socket is full (the rest wait for the
    /// next release or `recv`).
    fn flush_releases(&self, st: &mut SubState) {
        if rustix::process::getpid() != self.pid {
            st.pending.clear(); // a fork()ed copy: these pins are the parent's
            return;
        }
        let Some(sock) = st.sock.clone() else {
            st.pending.clear(); // hung up: the publisher dropped our pins
            return;
        };
        while let Some(&t) = st.pending.first() {
            match wire::send_msg(sock.as_fd(), &Msg::Release { ticket: t }, &[]) {
                Ok(()) => {
                    st.pending.remove(0);
                    if let Some(ctrl) = &st.ctrl {
                        ctrl.header().releases.fetch_add(1, Ordering::Release);
                    }
                }
                Err(rustix::io::Errno::AGAIN) => return,
                Err(_) => {
                    // The publisher is gone: its pins went with it.
                    st.pending.clear();
                    return;
                }
            }
        }
    }

    /// Read every queued socket message (slot fds, hang-up).
    fn pump(&self, st: &mut SubState) -> Result<()> {
        self.flush_releases(st);
        let Some(sock) = st.sock.clone() else {
            return Ok(()); // closed
        };
        while !st.eof && !st.closed {
            match wire::recv_msg(sock.as_fd())? {
                Recv::Empty => break,
                Recv::Eof => st.eof = true,
                Recv::Msg(
                    Msg::Slot {
                        index,
                        gen,
                        capacity,
                    },
                    fds,
                ) => {
                    let fd = match <[OwnedFd; 1]>::try_from(fds) {
                        Ok([fd]) => fd,
                        Err(v) => {
                            return Err(ChannelError::corrupt(format_args!(
                                "slot message with {} fds, expected 1",
                                v.len()
                            )))
                        }
                    };
                    let capacity = check_slot_msg(index, gen, capacity)?;
                    // Mapped now, so the seal and size are checked when the fd
                    // arrives (`Slot::map_fd`); the mapping serves the first frame.
                    let dup = fd.try_clone().map_err(|err| ChannelError::Os {
                        op: "dup slot fd",
                        source: err,
                    })?;
                    let first = map_received(dup, capacity, st.hook.as_ref())?;
                    let i = index as usize;
                    if st.slots.len() <= i {
                        st.slots.resize_with(i + 1, || None);
                    }
                    st.slots[i] = Some(SlotFd {
                        gen,
                        fd,
                        capacity,
                        free: vec![first],
                    });
                }
                Recv::Msg(Msg::Forget { index, gen }, _) => {
                    // Held frames keep their own mappings; only the cache goes.
                    if let Some(e) = st.slots.get_mut(index as usize) {
                        if e.as_ref().is_some_and(|e| e.gen == gen) {
                            *e = None;
                        }
                    }
                }
                Recv::Msg(m, _) => {
                    return Err(ChannelError::corrupt(format_args!(
                        "unexpected message from the publisher: {m:?}"
                    )))
                }
            }
        }
        Ok(())
    }
}

impl SlotHome for Inner {
    fn give_back(&self, slot: Slot) {
        let mut st = self.lock();
        if let Some((index, gen, ticket)) = st.held.remove(&slot.id()) {
            self.send_release(&mut st, ticket);
            if let Some(Some(e)) = st.slots.get_mut(index as usize) {
                if e.gen == gen && e.free.len() < FREE_MAPPINGS {
                    e.free.push(slot);
                    return;
                }
            }
            st.hang_up_if_done();
        }
        drop(st);
        drop(slot); // unmapped outside the lock
    }
}

/// Map a slot memfd the publisher sent, read-only, and hook the mapping.
/// `Slot::map_fd` refuses an fd that is not sealed against shrinking or is
/// smaller than `len`: corrupt input from the peer (a failing `mmap` itself is
/// our own resource error).
fn map_received(fd: OwnedFd, len: usize, hook: Option<&Arc<dyn SlotHook>>) -> Result<Slot> {
    let slot = Slot::map_fd(fd, len, false).map_err(|e| match e {
        framebus_core::Error::Os { op: "mmap", .. } => ChannelError::Core(e),
        e => ChannelError::corrupt(format_args!("received slot: {e}")),
    })?;
    Ok(match hook {
        Some(h) => slot.hooked(h.clone()),
        None => slot,
    })
}

/// A validated hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    pub mode: Mode,
    pub ring: u32,
    pub max_slots: u32,
    pub first_ticket: u64,
}

/// Check the publisher's first message: version, mode and depth, ring size
/// (bounds the control mapping), slot table size, first ticket.
pub(crate) fn check_hello(msg: Msg) -> Result<Hello> {
    let Msg::Hello {
        version,
        mode,
        depth,
        ring,
        first_ticket,
        max_slots,
    } = msg
    else {
        return Err(ChannelError::corrupt(format_args!(
            "expected hello, got {msg:?}"
        )));
    };
    if version != wire::PROTOCOL_VERSION {
        return Err(ChannelError::corrupt(format_args!(
            "protocol version {version}, expected {}",
            wire::PROTOCOL_VERSION
        )));
    }
    let mode = match mode {
        1 => Mode::Latest,
        2 if depth >= 1 && depth <= ring => Mode::Lossless { depth },
        _ => {
            return Err(ChannelError::corrupt(format_args!(
                "mode {mode} with depth {depth} and ring {ring}"
            )))
        }
    };
    if ring == 0
        || ring > MAX_RING
        || max_slots == 0
        || max_slots > MAX_SLOT_TABLE
        || first_ticket == 0
    {
        return Err(ChannelError::corrupt(format_args!(
            "hello with ring {ring}, max_slots {max_slots}, first ticket {first_ticket}"
        )));
    }
    Ok(Hello {
        mode,
        ring,
        max_slots,
        first_ticket,
    })
}

/// Check a slot message: index inside the largest table, a real generation, a
/// sane size. Returns the size as `usize`.
pub(crate) fn check_slot_msg(index: u32, gen: u32, capacity: u64) -> Result<usize> {
    if index >= MAX_SLOT_TABLE || gen == 0 {
        return Err(ChannelError::corrupt(format_args!(
            "slot message for index {index} generation {gen} (limit {MAX_SLOT_TABLE})"
        )));
    }
    if capacity == 0 || capacity > MAX_SLOT_BYTES {
        return Err(ChannelError::corrupt(format_args!(
            "slot of {capacity} bytes"
        )));
    }
    usize::try_from(capacity)
        .map_err(|_| ChannelError::corrupt(format_args!("slot of {capacity} bytes")))
}

/// The layout a descriptor claims, checked to lie inside a slot of `cap`
/// bytes: a known pixel format, every product bounded with checked arithmetic
/// before [`FrameLayout::new`] validates the rest, and the whole frame within
/// `cap`.
pub(crate) fn frame_layout(d: &DescValue, cap: usize) -> Result<FrameLayout> {
    let format = *PixelFormat::ALL
        .get(d.format as usize)
        .ok_or_else(|| ChannelError::corrupt(format_args!("pixel format code {}", d.format)))?;
    let cap = cap as u64;
    // Bound every product before FrameLayout computes it.
    let rows = if format.is_planar() {
        u64::from(d.height) / 2 * 3
    } else {
        u64::from(d.height)
    };
    let fits = d.stride <= cap && d.stride.checked_mul(rows).is_some_and(|n| n <= cap);
    if !fits {
        return Err(ChannelError::corrupt(format_args!(
            "a {}x{} {format} frame with stride {} does not fit its {cap}-byte slot",
            d.width, d.height, d.stride
        )));
    }
    let layout = FrameLayout::new(
        d.width as usize,
        d.height as usize,
        format,
        Some(d.stride as usize),
    )
    .map_err(|err| ChannelError::corrupt(format_args!("frame layout: {err}")))?;
    if layout.byte_len() as u64 > cap {
        return Err(ChannelError::corrupt(format_args!(
            "frame of {} bytes in a {cap}-byte slot",
            layout.byte_len()
        )));
    }
    Ok(layout)
}

/// What only an open subscriber has: freed by `close`.
struct Link {
    sock: Arc<OwnedFd>,
    ctrl: Arc<Control>,
    doorbell: OwnedFd,
}

/// The receiving end of a channel. See the module docs.
pub struct Subscriber {
    inner: Arc<Inner>,
    /// `None` once closed.
    link: Option<Link>,
    mode: Mode,
    ring: u32,
    /// Last ticket taken (tickets before `first_ticket` were never ours).
    last_ticket: u64,
    rpos: u32,
    skipped: u64,
    received: u64,
    /// How `recv` waits (see [`Spin`]).
    spin: Spin,
    /// The publisher's send period, for [`Spin::Adaptive`].
    cadence: Cadence,
    /// When `try_recv` last read the socket.
    last_socket_check: Option<Instant>,
}

/// The next step of a wait for a frame ([`Subscriber::wait_step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStep {
    /// Busy-wait (for a pending frame) until this instant, then ask again.
    Spin(Instant),
    /// Sleep on the doorbell at most this long, then ask again
    /// ([`Spin::Adaptive`] before the next frame is due).
    Nap(Duration),
    /// Sleep on the doorbell until a frame comes or the caller's time is up.
    Sleep,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("name", &self.inner.name)
            .field("mode", &self.mode)
            .field("received", &self.received)
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl Subscriber {
    /// Connect to channel `name`, waiting up to `timeout` for a publisher to
    /// appear (`Duration::ZERO` = try once). There is no kernel event for "an
    /// abstract socket was bound", so waiting retries every 10 ms.
    ///
    /// Made to be called in slices (e.g. 100 ms at a time by a caller that
    /// checks for Ctrl-C in between): a call that finds no publisher costs a
    /// socket per 10 ms retry, closed at once, and returns
    /// [`ChannelError::NotFound`] within its `timeout`. The connect itself
    /// never blocks (a publisher whose accept queue is full counts as not
    /// there yet). Once connected, the publisher's hello is awaited for the
    /// rest of `timeout` but at least [`Subscriber::HELLO_WAIT`], so a slice
    /// cut short still gets a live publisher whose thread was slow to run.
    pub fn connect(name: &str, timeout: Duration) -> Result<Subscriber> {
        let addr = wire::address(name)?;
        let start = Instant::now();
        let sock = loop {
            let sock = rustix::net::socket_with(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                None,
            )
            .map_err(|e| ChannelError::os("socket", e))?;
            match rustix::net::connect(&sock, &addr) {
                Ok(()) => break sock,
                // No publisher, or one whose accept queue is full (a blocking
                // connect would wait for it with no bound).
                Err(rustix::io::Errno::CONNREFUSED)
                | Err(rustix::io::Errno::NOENT)
                | Err(rustix::io::Errno::AGAIN) => {
                    let waited = start.elapsed();
                    if waited >= timeout {
                        return Err(ChannelError::NotFound {
                            name: name.to_owned(),
                            waited: waited.as_secs_f64(),
                        });
                    }
                    std::thread::sleep((timeout - waited).min(Duration::from_millis(10)));
                }
                Err(e) => return Err(ChannelError::os("connect", e)),
            }
        };
        wire::check_peer_uid(sock.as_fd(), name)?;
        // The hello comes as soon as the publisher's thread accepts us.
        let hello_wait = timeout
            .saturating_sub(start.elapsed())
            .max(Self::HELLO_WAIT);
        let deadline = Instant::now() + hello_wait;
        let (msg, fds) = loop {
            match wire::recv_msg(sock.as_fd())? {
                Recv::Msg(m, fds) => break (m, fds),
                Recv::Eof => return Err(ChannelError::closed(name, CloseReason::PublisherGone)),
                Recv::Empty => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ChannelError::Timeout(hello_wait, "the publisher's hello"));
                    }
                    wire::wait_readable(&[sock.as_fd()], Some(left))?;
                }
            }
        };
        let hello = check_hello(msg)?;
        let [ctrl_fd, doorbell] = <[OwnedFd; 2]>::try_from(fds).map_err(|v| {
            ChannelError::corrupt(format_args!("hello with {} fds, expected 2", v.len()))
        })?;
        let ctrl = Arc::new(Control::open(ctrl_fd, hello.ring)?);
        // The doorbell is read without blocking whatever the peer passed.
        let fl = rustix::fs::fcntl_getfl(&doorbell).map_err(|e| ChannelError::os("fcntl", e))?;
        rustix::fs::fcntl_setfl(&doorbell, fl | rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| ChannelError::os("fcntl", e))?;
        let rpos = ctrl.header().read_pos.load(Ordering::Acquire);
        let sock = Arc::new(sock);
        Ok(Subscriber {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                pid: rustix::process::getpid(),
                state: Mutex::new(SubState {
                    sock: Some(sock.clone()),
                    ctrl: Some(ctrl.clone()),
                    slots: (0..hello.max_slots).map(|_| None).collect(),
                    held: FxHashMap::default(),
                    pending: Vec::new(),
                    eof: false,
                    closed: false,
                    hook: None,
                }),
            }),
            link: Some(Link {
                sock,
                ctrl,
                doorbell,
            }),
            mode: hello.mode,
            ring: hello.ring,
            last_ticket: hello.first_ticket - 1,
            rpos,
            skipped: 0,
            received: 0,
            spin: Spin::Off,
            cadence: Cadence::default(),
            last_socket_check: None,
        })
    }

    /// Least time [`Subscriber::connect`] waits for the publisher's hello once
    /// connected (the publisher's thread sends it as soon as it runs).
    pub const HELLO_WAIT: Duration = Duration::from_secs(1);

    /// How often a `try_recv` that finds nothing reads the socket: the bound on
    /// how late a polling loop learns that the publisher died.
    pub const SOCKET_CHECK: Duration = Duration::from_millis(1);

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Latest mode: frames replaced by newer ones before this subscriber took them.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Frames received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Received frames still held (pinned) by this process.
    pub fn held(&self) -> usize {
        self.inner.lock().held.len()
    }

    /// Slot fds this subscriber keeps (one per live table entry it was sent).
    pub fn cached_slots(&self) -> usize {
        self.inner.lock().slots.iter().flatten().count()
    }

    /// Wait for the next frame up to `timeout` (`None` = forever). Latest mode:
    /// the newest frame not seen yet. Lossless: the next frame in order.
    /// After the publisher closes or dies, frames already queued are still
    /// delivered, then [`ChannelError::Closed`].
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Frame> {
        self.recv_since(timeout, Instant::now())
    }

    /// [`Subscriber::recv`] as one part of a longer wait that began at
    /// `started`: a [`Spin::For`] budget counts from there, so a caller that
    /// waits in slices (to check for Ctrl-C between them) spins once in all,
    /// not once per slice.
    pub fn recv_since(&mut self, timeout: Option<Duration>, started: Instant) -> Result<Frame> {
        let ctrl = self.open_ctrl()?.clone();
        let h = ctrl.header();
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            // Fast path: a frame is waiting (its slot fd, if new, is read on demand).
            if let Some(f) = self.try_take()? {
                return Ok(f);
            }
            let eof = {
                let mut st = self.inner.lock();
                self.inner.pump(&mut st)?;
                st.eof
            };
            if let Some(f) = self.try_take()? {
                return Ok(f);
            }
            if eof || h.closed.load(Ordering::Acquire) != 0 {
                return Err(self.publisher_gone());
            }
            let left = time_left(deadline, timeout, "a frame")?;
            let within = |d: Duration| left.map_or(d, |l| l.min(d));
            match self.wait_step(started) {
                WaitStep::Spin(until) => {
                    let now = Instant::now();
                    self.spin_until(now + within(until.saturating_duration_since(now)));
                }
                WaitStep::Nap(nap) => self.sleep(h, Some(within(nap)))?,
                WaitStep::Sleep => self.sleep(h, left)?,
            }
        }
    }

    /// What a wait for the next frame that began at `started` does now, under
    /// this subscriber's [`Spin`] policy. `recv` follows it; a binding that
    /// runs the spin itself (Python, with its interpreter lock held) asks the
    /// same question, so the policy lives in one place.
    pub fn wait_step(&self, started: Instant) -> WaitStep {
        match self.spin {
            Spin::Off => WaitStep::Sleep,
            Spin::For(budget) => {
                let end = started + budget;
                if Instant::now() < end {
                    WaitStep::Spin(end)
                } else {
                    WaitStep::Sleep
                }
            }
            Spin::Adaptive => {
                let Some((open, close)) = self.cadence.window() else {
                    return WaitStep::Sleep; // no cadence yet
                };
                let now = wire::monotonic_ns();
                if now < open {
                    // A frame sent early still rings the doorbell.
                    WaitStep::Nap(Duration::from_nanos(open - now))
                } else if now < close {
                    WaitStep::Spin(Instant::now() + Duration::from_nanos(close - now))
                } else {
                    WaitStep::Sleep // past the window (late or missed)
                }
            }
        }
    }

    /// Busy-wait until a frame is pending or `until` passes.
    ///
    /// No CPU pause hint (`spin_loop`) in the loop: under KVM a vCPU that runs
    /// PAUSE in a tight loop is taken for a lock waiter and descheduled
    /// (pause-loop exiting). On the CI VM, with a hint on every poll, the
    /// Python-to-Python send→recv p50 was 60 µs; without, 37 µs (and the time
    /// from the descriptor store to the subscriber seeing it fell from 38 to
    /// 11 µs). Spinning is opt-in and bounded, so the cost on bare metal (a
    /// hyperthread sibling runs a little slower meanwhile) is the user's choice.
    fn spin_until(&self, until: Instant) {
        let mut i = 0u32;
        while !self.has_pending() {
            i = i.wrapping_add(1);
            if i & 255 == 0 && Instant::now() >= until {
                break;
            }
        }
    }

    /// Sleep on the doorbell (and the socket, for hang-up and slot fds) until
    /// rung or `timeout`; the publisher rings only while `sub_waiting` is set.
    fn sleep(&self, h: &Header, timeout: Option<Duration>) -> Result<()> {
        let Some(link) = &self.link else {
            return Err(self.closed_here());
        };
        h.sub_waiting.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let woke = if self.has_pending() {
            Ok(())
        } else {
            wire::wait_readable(&[link.doorbell.as_fd(), link.sock.as_fd()], timeout).map(|rev| {
                if rev[0].intersects(PollFlags::IN) {
                    wire::clear_doorbell(link.doorbell.as_fd());
                }
            })
        };
        h.sub_waiting.store(0, Ordering::SeqCst);
        woke
    }

    /// A frame if one is ready now, without waiting. Like `recv`, frames already
    /// queued when the publisher closes or dies are still delivered, then
    /// [`ChannelError::Closed`] (so a polling loop ends instead of spinning on `None`).
    ///
    /// Made for polling loops: a pending frame is taken with no syscall, and
    /// with nothing pending the socket (publisher hang-up, queued releases) is
    /// looked at no more than once per [`Subscriber::SOCKET_CHECK`].
    pub fn try_recv(&mut self) -> Result<Option<Frame>> {
        self.open_ctrl()?;
        if let Some(f) = self.try_take()? {
            return Ok(Some(f));
        }
        let now = Instant::now();
        let mut eof = false;
        if self
            .last_socket_check
            .is_none_or(|t| now.duration_since(t) >= Self::SOCKET_CHECK)
        {
            self.last_socket_check = Some(now);
            let mut st = self.inner.lock();
            self.inner.pump(&mut st)?;
            eof = st.eof;
            drop(st);
            if let Some(f) = self.try_take()? {
                return Ok(Some(f));
            }
        }
        if eof || self.open_ctrl()?.header().closed.load(Ordering::Acquire) != 0 {
            return Err(self.publisher_gone());
        }
        Ok(None)
    }

    /// The control block of an open subscriber; `Closed` after [`Subscriber::close`].
    fn open_ctrl(&self) -> Result<&Arc<Control>> {
        match &self.link {
            Some(l) => Ok(&l.ctrl),
            None => Err(self.closed_here()),
        }
    }

    #[cold]
    fn closed_here(&self) -> ChannelError {
        ChannelError::closed(&self.inner.name, CloseReason::SubscriberClosed)
    }

    #[cold]
    fn publisher_gone(&self) -> ChannelError {
        ChannelError::closed(&self.inner.name, CloseReason::PublisherGone)
    }

    /// A frame is waiting to be taken (one atomic load, no syscall).
    pub fn has_pending(&self) -> bool {
        let Some(link) = &self.link else {
            return false;
        };
        let h = link.ctrl.header();
        match self.mode {
            Mode::Latest => h.mailbox.load(Ordering::SeqCst) != 0,
            Mode::Lossless { .. } => h.write_pos.load(Ordering::SeqCst) != self.rpos,
        }
    }

    fn try_take(&mut self) -> Result<Option<Frame>> {
        let Some(link) = &self.link else {
            return Err(self.closed_here());
        };
        let ctrl = &*link.ctrl;
        let h = ctrl.header();
        let desc = match self.mode {
            Mode::Latest => {
                let t = h.mailbox.swap(0, Ordering::AcqRel);
                if t == 0 {
                    return Ok(None);
                }
                match ctrl.desc(t).read(t) {
                    Some(d) => d,
                    None => {
                        // Rewritten under us (the publisher lapped the ring):
                        // the frame is ours, but its descriptor is gone. It and
                        // any gap before it count as skipped, once.
                        self.release(t);
                        if t > self.last_ticket {
                            self.skipped = self.skipped.saturating_add(t - self.last_ticket);
                            self.last_ticket = t;
                        }
                        return Ok(None);
                    }
                }
            }
            Mode::Lossless { .. } => {
                let w = h.write_pos.load(Ordering::Acquire);
                if w == self.rpos {
                    return Ok(None);
                }
                if w.wrapping_sub(self.rpos) > self.ring {
                    return Err(ChannelError::corrupt(format_args!(
                        "write position {w} is more than {} ahead of read position {}",
                        self.ring, self.rpos
                    )));
                }
                let d = read_any(ctrl.desc(u64::from(self.rpos)));
                self.rpos = self.rpos.wrapping_add(1);
                h.read_pos.store(self.rpos, Ordering::SeqCst);
                if h.pub_waiting.load(Ordering::SeqCst) != 0 {
                    let _ = rustix::thread::futex::wake(
                        &h.read_pos,
                        rustix::thread::futex::Flags::empty(),
                        1,
                    );
                }
                d.ok_or_else(|| {
                    ChannelError::corrupt(format_args!("torn descriptor in the queue"))
                })?
            }
        };
        let t = desc.ticket;
        if t <= self.last_ticket {
            self.release(t);
            return Err(ChannelError::corrupt(format_args!(
                "ticket {t} after ticket {}",
                self.last_ticket
            )));
        }
        if self.mode == Mode::Latest {
            self.skipped = self.skipped.saturating_add(t - self.last_ticket - 1);
        }
        self.last_ticket = t;
        self.cadence.observe(t, desc.sent_ns);
        match self.build_frame(&desc) {
            Ok(f) => {
                self.received += 1;
                Ok(Some(f))
            }
            Err(e) => {
                self.release(t);
                Err(e)
            }
        }
    }

    fn release(&self, ticket: u64) {
        let mut st = self.inner.lock();
        self.inner.send_release(&mut st, ticket);
    }

    fn build_frame(&self, d: &DescValue) -> Result<Frame> {
        let index = d.index as usize;
        let mut st = self.inner.lock();
        let known = |st: &SubState| matches!(st.slots.get(index), Some(Some(e)) if e.gen == d.gen);
        if !known(&st) {
            // Its fd was sent before the descriptor: read the socket.
            self.inner.pump(&mut st)?;
            if !known(&st) {
                return Err(ChannelError::corrupt(format_args!(
                    "descriptor names slot {index} generation {} that was never sent",
                    d.gen
                )));
            }
        }
        // Disjoint fields: the hook is read only when a mapping is made.
        let SubState { slots, hook, .. } = &mut *st;
        let e = slots[index].as_mut().expect("checked above");
        let layout = frame_layout(d, e.capacity)?;
        let mapping = match e.free.pop() {
            Some(m) => m,
            None => {
                let fd = e.fd.try_clone().map_err(|err| ChannelError::Os {
                    op: "dup slot fd",
                    source: err,
                })?;
                map_received(fd, e.capacity, hook.as_ref())?
            }
        };
        st.held.insert(mapping.id(), (d.index, d.gen, d.ticket));
        drop(st);
        let home: Arc<dyn SlotHome> = self.inner.clone();
        let lease = Lease::new(mapping, Some(home));
        Ok(Frame::new(lease, layout)?
            .with_meta(d.timestamp_ns, d.seq)
            .into_readonly())
    }

    /// Stop receiving, and free everything no held frame needs.
    ///
    /// Frames delivered but never taken are given back to the publisher at
    /// once. The control block, the doorbell, and every cached slot fd and
    /// mapping are closed and unmapped now; frames already received stay
    /// valid and pinned until dropped, each keeping only its own mapping, and
    /// the socket stays open while any is held (its release must reach the
    /// publisher). With nothing held the socket closes now too; otherwise
    /// when the last held frame is dropped. Afterwards `recv` and `try_recv`
    /// fail with [`ChannelError::Closed`] ([`CloseReason::SubscriberClosed`]).
    /// A `fork()`ed copy frees its own copies only: it says nothing to the
    /// publisher (the connection is the parent's).
    pub fn close(&mut self) {
        let Some(link) = self.link.take() else {
            return;
        };
        let ours = rustix::process::getpid() == self.inner.pid;
        let mut untaken = Vec::new();
        if ours {
            let _ = wire::send_msg(link.sock.as_fd(), &Msg::Bye, &[]);
            // Frames delivered but never taken: their pins go now rather than
            // when the connection closes.
            let h = link.ctrl.header();
            match self.mode {
                Mode::Latest => {
                    let t = h.mailbox.swap(0, Ordering::AcqRel);
                    if t != 0 {
                        untaken.push(t);
                    }
                }
                Mode::Lossless { .. } => {
                    let w = h.write_pos.load(Ordering::Acquire);
                    if w.wrapping_sub(self.rpos) <= self.ring {
                        while self.rpos != w {
                            if let Some(d) = read_any(link.ctrl.desc(u64::from(self.rpos))) {
                                untaken.push(d.ticket);
                            }
                            self.rpos = self.rpos.wrapping_add(1);
                        }
                    }
                }
            }
        }
        let mut st = self.inner.lock();
        for t in untaken {
            self.inner.send_release(&mut st, t);
        }
        st.closed = true;
        let ctrl = st.ctrl.take();
        let slots = std::mem::take(&mut st.slots);
        st.hang_up_if_done();
        drop(st);
        // Unmapped and closed outside the lock.
        drop((ctrl, slots, link));
    }

    /// Hook every mapping of a publisher's slot this subscriber makes from
    /// now on ([`Slot::hooked`]): framebus-cuda's pin hook registers each
    /// one read-only with the GPU once, so uploads of received frames are
    /// DMA from pinned memory. Mappings live as long as the slot stays in the
    /// publisher's table (a few are kept per slot), so that happens once per
    /// slot, not per frame. Call it before the first `recv`: mappings made
    /// before keep no hook. The hook runs under this subscriber's lock.
    pub fn set_slot_hook(&mut self, hook: Arc<dyn SlotHook>) {
        self.inner.lock().hook = Some(hook);
    }

    /// How `recv` waits for a frame: sleep at once ([`Spin::Off`], the
    /// default), busy-wait a while first, or busy-wait only around the moment
    /// the next frame is due ([`Spin::Adaptive`]). Spinning trades CPU for
    /// wake-up latency (see the [`crate::spin`] module docs).
    pub fn set_spin(&mut self, spin: Spin) {
        self.spin = spin;
    }

    /// The publisher's send period as learnt from received frames (used by
    /// [`Spin::Adaptive`]); `None` until two frames came at a steady rate.
    pub fn send_period(&self) -> Option<Duration> {
        self.cadence.period()
    }

    /// [`Subscriber::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.link.is_none()
    }

    /// The raw control block, for tests that write garbage into it (null and
    /// 0 after close).
    #[doc(hidden)]
    pub fn control_bytes(&self) -> (*mut u8, usize) {
        match &self.link {
            Some(l) => l.ctrl.as_ptr_len(),
            None => (std::ptr::null_mut(), 0),
        }
    }

    /// The publisher is blocked waiting for room in this subscriber's queue.
    #[cfg(test)]
    pub(crate) fn publisher_waiting(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.ctrl.header().pub_waiting.load(Ordering::SeqCst) != 0)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.close();
    }
}

/// Lossless read of whatever descriptor is there (the ticket is not known in advance).
fn read_any(d: &crate::shm::Desc) -> Option<DescValue> {
    let t = d.ticket.load(Ordering::Acquire);
    if t == 0 {
        return None;
    }
    d.read(t)
}
