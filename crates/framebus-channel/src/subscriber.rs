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
//! Everything coming from the publisher is validated: slot indexes, generations,
//! sizes (against the memfd's real size and shrink seal), pixel formats and
//! layouts; a bad value is a [`ChannelError::Corrupt`], never a bad access.

use crate::shm::{require_no_shrink, Control, DescValue, Header, MAX_RING};
use crate::spin::{Cadence, Spin};
use crate::transport::time_left;
use crate::wire::{self, Msg, Recv};
use crate::{ChannelError, Mode, Result};
use framebus_core::{Frame, FrameLayout, Lease, PixelFormat, Slot, SlotHome};
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
    slots: Vec<Option<SlotFd>>,
    /// Mapping id (of our local `Slot`) → (table index, generation, ticket).
    held: FxHashMap<u64, (u32, u32, u64)>,
    /// Releases that could not be sent yet (socket full).
    pending: Vec<u64>,
    /// The publisher hung up.
    eof: bool,
}

struct Inner {
    name: String,
    sock: OwnedFd,
    ctrl: Control,
    doorbell: OwnedFd,
    max_slots: u32,
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
        while let Some(&t) = st.pending.first() {
            match wire::send_msg(self.sock.as_fd(), &Msg::Release { ticket: t }, &[]) {
                Ok(()) => {
                    st.pending.remove(0);
                    self.ctrl.header().releases.fetch_add(1, Ordering::Release);
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
        while !st.eof {
            match wire::recv_msg(self.sock.as_fd())? {
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
                    if index >= self.max_slots || gen == 0 {
                        return Err(ChannelError::corrupt(format_args!(
                            "slot message for index {index} generation {gen} (table holds {})",
                            self.max_slots
                        )));
                    }
                    if capacity == 0 || capacity > MAX_SLOT_BYTES {
                        return Err(ChannelError::corrupt(format_args!(
                            "slot of {capacity} bytes"
                        )));
                    }
                    require_no_shrink(&fd, "slot")?;
                    let st_size = rustix::fs::fstat(&fd)
                        .map_err(|e| ChannelError::os("fstat slot", e))?
                        .st_size as u64;
                    if st_size < capacity {
                        return Err(ChannelError::corrupt(format_args!(
                            "slot claims {capacity} bytes but its memfd has {st_size}"
                        )));
                    }
                    st.slots[index as usize] = Some(SlotFd {
                        gen,
                        fd,
                        capacity: capacity as usize,
                        free: Vec::new(),
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
        }
        drop(st);
        drop(slot);
    }
}

/// The receiving end of a channel. See the module docs.
pub struct Subscriber {
    inner: Arc<Inner>,
    mode: Mode,
    ring: u32,
    /// Last ticket taken (tickets before `first_ticket` were never ours).
    last_ticket: u64,
    rpos: u32,
    skipped: u64,
    received: u64,
    closed: bool,
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
    pub fn connect(name: &str, timeout: Duration) -> Result<Subscriber> {
        let addr = wire::address(name)?;
        let start = Instant::now();
        let sock = loop {
            let sock = rustix::net::socket_with(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC,
                None,
            )
            .map_err(|e| ChannelError::os("socket", e))?;
            match rustix::net::connect(&sock, &addr) {
                Ok(()) => break sock,
                Err(rustix::io::Errno::CONNREFUSED) | Err(rustix::io::Errno::NOENT) => {
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
            .max(Duration::from_secs(5));
        let deadline = Instant::now() + hello_wait;
        let (msg, fds) = loop {
            match wire::recv_msg(sock.as_fd())? {
                Recv::Msg(m, fds) => break (m, fds),
                Recv::Eof => return Err(ChannelError::Closed(name.to_owned())),
                Recv::Empty => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ChannelError::Timeout(hello_wait, "the publisher's hello"));
                    }
                    wire::wait_readable(&[sock.as_fd()], Some(left))?;
                }
            }
        };
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
        if ring == 0 || ring > MAX_RING || max_slots == 0 || max_slots > 4096 || first_ticket == 0 {
            return Err(ChannelError::corrupt(format_args!(
                "hello with ring {ring}, max_slots {max_slots}, first ticket {first_ticket}"
            )));
        }
        let [ctrl_fd, doorbell] = <[OwnedFd; 2]>::try_from(fds).map_err(|v| {
            ChannelError::corrupt(format_args!("hello with {} fds, expected 2", v.len()))
        })?;
        let ctrl = Control::open(ctrl_fd, ring)?;
        // The doorbell is read without blocking whatever the peer passed.
        let fl = rustix::fs::fcntl_getfl(&doorbell).map_err(|e| ChannelError::os("fcntl", e))?;
        rustix::fs::fcntl_setfl(&doorbell, fl | rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| ChannelError::os("fcntl", e))?;
        let rpos = ctrl.header().read_pos.load(Ordering::Acquire);
        Ok(Subscriber {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                sock,
                ctrl,
                doorbell,
                max_slots,
                pid: rustix::process::getpid(),
                state: Mutex::new(SubState {
                    slots: (0..max_slots).map(|_| None).collect(),
                    held: FxHashMap::default(),
                    pending: Vec::new(),
                    eof: false,
                }),
            }),
            mode,
            ring,
            last_ticket: first_ticket - 1,
            rpos,
            skipped: 0,
            received: 0,
            closed: false,
            spin: Spin::Off,
            cadence: Cadence::default(),
            last_socket_check: None,
        })
    }

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
        if self.closed {
            return Err(ChannelError::Closed(self.inner.name.clone()));
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let inner = self.inner.clone();
        let h = inner.ctrl.header();
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
                return Err(ChannelError::Closed(self.inner.name.clone()));
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
        h.sub_waiting.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let woke = if self.has_pending() {
            Ok(())
        } else {
            wire::wait_readable(
                &[self.inner.doorbell.as_fd(), self.inner.sock.as_fd()],
                timeout,
            )
            .map(|rev| {
                if rev[0].intersects(PollFlags::IN) {
                    wire::clear_doorbell(self.inner.doorbell.as_fd());
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
        if self.closed {
            return Err(ChannelError::Closed(self.inner.name.clone()));
        }
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
        if eof || self.inner.ctrl.header().closed.load(Ordering::Acquire) != 0 {
            return Err(ChannelError::Closed(self.inner.name.clone()));
        }
        Ok(None)
    }

    /// A frame is waiting to be taken (one atomic load, no syscall).
    pub fn has_pending(&self) -> bool {
        let h = self.inner.ctrl.header();
        match self.mode {
            Mode::Latest => h.mailbox.load(Ordering::SeqCst) != 0,
            Mode::Lossless { .. } => h.write_pos.load(Ordering::SeqCst) != self.rpos,
        }
    }

    fn try_take(&mut self) -> Result<Option<Frame>> {
        let h = self.inner.ctrl.header();
        let desc = match self.mode {
            Mode::Latest => {
                let t = h.mailbox.swap(0, Ordering::AcqRel);
                if t == 0 {
                    return Ok(None);
                }
                match self.inner.ctrl.desc(t).read(t) {
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
                let d = read_any(self.inner.ctrl.desc(u64::from(self.rpos)));
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
        let index = d.index;
        if index >= self.inner.max_slots {
            return Err(ChannelError::corrupt(format_args!(
                "descriptor names slot index {index} (table holds {})",
                self.inner.max_slots
            )));
        }
        let format = *PixelFormat::ALL
            .get(d.format as usize)
            .ok_or_else(|| ChannelError::corrupt(format_args!("pixel format code {}", d.format)))?;
        let mut st = self.inner.lock();
        let known = |st: &SubState| matches!(&st.slots[index as usize], Some(e) if e.gen == d.gen);
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
        let e = st.slots[index as usize].as_mut().expect("checked above");
        let cap = e.capacity as u64;
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
        let mapping = match e.free.pop() {
            Some(m) => m,
            None => {
                let fd = e.fd.try_clone().map_err(|err| ChannelError::Os {
                    op: "dup slot fd",
                    source: err,
                })?;
                Slot::map_fd(fd, e.capacity, false)?
            }
        };
        st.held.insert(mapping.id(), (index, d.gen, d.ticket));
        drop(st);
        let home: Arc<dyn SlotHome> = self.inner.clone();
        let lease = Lease::new(mapping, Some(home));
        Ok(Frame::new(lease, layout)?
            .with_meta(d.timestamp_ns, d.seq)
            .into_readonly())
    }

    /// Stop receiving. Frames already received stay valid (and pinned) until
    /// dropped; the connection closes when the last of them goes.
    pub fn close(&mut self) {
        if !self.closed && rustix::process::getpid() != self.inner.pid {
            self.closed = true; // a fork()ed copy: the connection is the parent's
        }
        if !self.closed {
            self.closed = true;
            let _ = wire::send_msg(self.inner.sock.as_fd(), &Msg::Bye, &[]);
            // Give back frames delivered but never taken, so their pins go now
            // rather than when the connection closes.
            let h = self.inner.ctrl.header();
            match self.mode {
                Mode::Latest => {
                    let t = h.mailbox.swap(0, Ordering::AcqRel);
                    if t != 0 {
                        self.release(t);
                    }
                }
                Mode::Lossless { .. } => {
                    let w = h.write_pos.load(Ordering::Acquire);
                    if w.wrapping_sub(self.rpos) <= self.ring {
                        while self.rpos != w {
                            if let Some(d) = read_any(self.inner.ctrl.desc(u64::from(self.rpos))) {
                                self.release(d.ticket);
                            }
                            self.rpos = self.rpos.wrapping_add(1);
                        }
                    }
                }
            }
        }
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

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The raw control block, for tests that write garbage into it.
    #[doc(hidden)]
    pub fn control_bytes(&self) -> (*mut u8, usize) {
        self.inner.ctrl.as_ptr_len()
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
