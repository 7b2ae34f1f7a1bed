//! Types placed in shared memory, and the per-subscriber control block.
//!
//! A control block is one memfd (mapped by the publisher and by one
//! subscriber) holding a [`Header`] followed by `ring` [`Desc`] entries.
//! Both processes can write it, so each side treats what the other wrote as
//! untrusted input: every field is an atomic integer (any bit pattern is a
//! valid value), indexes are bounds-checked here, and meaning is checked by the
//! users (`publisher`, `subscriber`).
//!
//! Shared memory is viewed as a type in one place only, [`view`], and only as
//! a type marked [`SharedPod`].
//!
//! Depends on `framebus-core` (`Slot` gives the memfd mapping, and checks a
//! received one's shrink seal and size) and nothing else in this crate except
//! the error type.

use crate::{ChannelError, Result};
use framebus_core::Slot;
use rustix::fd::OwnedFd;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Marker for types that may live in memory shared with another process.
/// [`view`] (and so every typed access to a control block) requires it.
///
/// # Safety
/// An implementor must be `#[repr(C)]` (or a single atomic integer), contain
/// only atomic integers (so every bit pattern is a valid value and concurrent
/// access from another process is not a data race), and contain no pointers,
/// references, fds or padding whose contents matter.
pub unsafe trait SharedPod: Sync {}

// SAFETY: an atomic integer: any bit pattern is valid, accesses are atomic.
unsafe impl SharedPod for AtomicU32 {}
// SAFETY: as above.
unsafe impl SharedPod for AtomicU64 {}

/// A `&T` at byte `offset` of the shared mapping of `len` bytes at `base`.
/// Panics — never reads out of bounds — if `[offset, offset + size_of::<T>())`
/// is not inside the mapping or is misaligned for `T`.
///
/// # Safety
/// `base` must point to a mapping of at least `len` bytes that stays mapped
/// for `'a`.
pub unsafe fn view<'a, T: SharedPod>(base: *const u8, len: usize, offset: usize) -> &'a T {
    let end = offset.checked_add(std::mem::size_of::<T>());
    assert!(
        end.is_some_and(|end| end <= len),
        "shared view at {offset} past the {len}-byte mapping"
    );
    let p = base.wrapping_add(offset);
    assert!(
        p as usize & (std::mem::align_of::<T>() - 1) == 0,
        "misaligned shared view"
    );
    // SAFETY: [p, p + size_of::<T>()) lies inside the live mapping (checked
    // above, and the caller guarantees the mapping for 'a); p is aligned for T;
    // T: SharedPod, so any bytes there are a valid T, and a peer's concurrent
    // writes are atomic accesses, not data races.
    unsafe { &*(p as *const T) }
}

/// First word of every control block.
pub const MAGIC: u64 = 0x4642_5553_4354_4c33; // "FBUSCTL3"

/// Control block header.
#[repr(C)]
pub struct Header {
    pub magic: AtomicU64,
    /// Latest mode: ticket of the pending frame (0 = none). The subscriber takes
    /// it with `swap(0)`, the publisher replaces it with `swap(new)`: whoever
    /// swaps a ticket out owns its pin.
    pub mailbox: AtomicU64,
    /// Lossless mode: descriptors written (wrapping counter, publisher).
    pub write_pos: AtomicU32,
    /// Lossless mode: descriptors taken (wrapping counter, subscriber; futex word
    /// a full publisher waits on).
    pub read_pos: AtomicU32,
    /// Non-zero while the subscriber is about to sleep on the doorbell.
    pub sub_waiting: AtomicU32,
    /// Non-zero while the publisher sleeps on `read_pos`.
    pub pub_waiting: AtomicU32,
    /// Set by the publisher when it closes the channel.
    pub closed: AtomicU32,
    /// RELEASE messages the subscriber sent (wrapping). Only a hint that lets the
    /// publisher skip a `recvmsg` when nothing is queued; never trusted.
    pub releases: AtomicU32,
    /// Pads the header to one cache line, so each descriptor after it sits in
    /// a line of its own (a 40-byte header put every descriptor across two
    /// lines: two cross-core transfers per hand-off instead of one).
    _pad: [AtomicU64; 3],
}

/// One frame descriptor. Written by the publisher as a seqlock on `ticket`
/// (0 while being written), read by the subscriber.
#[repr(C)]
pub struct Desc {
    pub ticket: AtomicU64,
    pub timestamp_ns: AtomicU64,
    pub seq: AtomicU64,
    /// CLOCK_MONOTONIC when the publisher sent it (paces adaptive spinning;
    /// untrusted like everything here: a wrong value only mistimes a spin).
    pub sent_ns: AtomicU64,
    pub stride: AtomicU64,
    pub index: AtomicU32,
    pub gen: AtomicU32,
    pub width: AtomicU32,
    pub height: AtomicU32,
    pub format: AtomicU32,
    pub _reserved: AtomicU32,
}

// SAFETY: #[repr(C)], atomics only, no pointers or fds.
unsafe impl SharedPod for Header {}
// SAFETY: #[repr(C)], atomics only, no pointers or fds.
unsafe impl SharedPod for Desc {}

/// A descriptor's contents as plain values (a consistent snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescValue {
    pub ticket: u64,
    pub timestamp_ns: u64,
    pub seq: u64,
    pub sent_ns: u64,
    pub stride: u64,
    pub index: u32,
    pub gen: u32,
    pub width: u32,
    pub height: u32,
    pub format: u32,
}

impl Desc {
    /// Publisher side: write a descriptor (seqlock: ticket 0, fields, ticket).
    pub fn write(&self, v: &DescValue) {
        self.ticket.store(0, Ordering::Relaxed);
        fence(Ordering::Release);
        self.timestamp_ns.store(v.timestamp_ns, Ordering::Relaxed);
        self.seq.store(v.seq, Ordering::Relaxed);
        self.sent_ns.store(v.sent_ns, Ordering::Relaxed);
        self.stride.store(v.stride, Ordering::Relaxed);
        self.index.store(v.index, Ordering::Relaxed);
        self.gen.store(v.gen, Ordering::Relaxed);
        self.width.store(v.width, Ordering::Relaxed);
        self.height.store(v.height, Ordering::Relaxed);
        self.format.store(v.format, Ordering::Relaxed);
        self.ticket.store(v.ticket, Ordering::Release);
    }

    /// Subscriber side: a consistent snapshot if the descriptor holds `ticket`
    /// and was not rewritten while being read; `None` otherwise.
    pub fn read(&self, ticket: u64) -> Option<DescValue> {
        let t1 = self.ticket.load(Ordering::Acquire);
        if t1 != ticket || t1 == 0 {
            return None;
        }
        let v = DescValue {
            ticket,
            timestamp_ns: self.timestamp_ns.load(Ordering::Relaxed),
            seq: self.seq.load(Ordering::Relaxed),
            sent_ns: self.sent_ns.load(Ordering::Relaxed),
            stride: self.stride.load(Ordering::Relaxed),
            index: self.index.load(Ordering::Relaxed),
            gen: self.gen.load(Ordering::Relaxed),
            width: self.width.load(Ordering::Relaxed),
            height: self.height.load(Ordering::Relaxed),
            format: self.format.load(Ordering::Relaxed),
        };
        fence(Ordering::Acquire);
        (self.ticket.load(Ordering::Relaxed) == t1).then_some(v)
    }
}

/// Bytes a control block with `ring` descriptors needs.
pub fn control_len(ring: u32) -> usize {
    std::mem::size_of::<Header>() + ring as usize * std::mem::size_of::<Desc>()
}

/// Largest ring a subscriber accepts (bounds the mapping a peer can ask for).
pub const MAX_RING: u32 = 4096;

/// A mapped control block. Hands out references to the shared atomics only.
pub struct Control {
    slot: Slot,
    ring: u32,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("ring", &self.ring).finish()
    }
}

impl Control {
    /// Publisher side: a fresh, zeroed control block with `ring` descriptors.
    pub fn create(ring: u32) -> Result<Control> {
        if ring == 0 || ring > MAX_RING {
            return Err(ChannelError::InvalidArgument {
                what: "ring size",
                value: ring.to_string(),
                why: "must be 1..=4096",
            });
        }
        let slot = Slot::new(control_len(ring), false)?;
        let c = Control { slot, ring };
        c.prefault();
        c.header().magic.store(MAGIC, Ordering::Release);
        Ok(c)
    }

    /// Subscriber side: map a control memfd received from the publisher. The
    /// size and shrink seal (so the peer cannot truncate it under us, which
    /// would SIGBUS; checked by `Slot::map_fd`) and the magic are checked.
    pub fn open(fd: OwnedFd, ring: u32) -> Result<Control> {
        if ring == 0 || ring > MAX_RING {
            return Err(ChannelError::Corrupt(format!(
                "control block ring size {ring} (allowed 1..=4096)"
            )));
        }
        let slot = Slot::map_fd(fd, control_len(ring), true).map_err(|e| match e {
            framebus_core::Error::Os { op: "mmap", .. } => ChannelError::Core(e),
            e => ChannelError::Corrupt(format!("control block: {e}")),
        })?;
        let c = Control { slot, ring };
        c.prefault();
        if c.header().magic.load(Ordering::Acquire) != MAGIC {
            return Err(ChannelError::Corrupt(
                "control block has a bad magic".into(),
            ));
        }
        Ok(c)
    }

    pub fn ring(&self) -> u32 {
        self.ring
    }

    /// Touch every page of the block now, so neither side takes a page fault
    /// in the middle of a hand-off. Without this, each side faulted once per
    /// 64 descriptors during the first lap of the ring: a 20–60 µs stall on
    /// every 64th frame of the first 256 (the p99 of a short run).
    /// A read is enough: on a shared memfd it allocates the page and maps it
    /// with the mapping's permissions.
    /// (Every descriptor is read: a few hundred loads, no page missed.)
    fn prefault(&self) {
        std::hint::black_box(self.header().magic.load(Ordering::Relaxed));
        for i in 0..u64::from(self.ring) {
            std::hint::black_box(self.desc(i).ticket.load(Ordering::Relaxed));
        }
    }

    /// The memfd (to send to the subscriber).
    pub fn fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.slot.fd().expect("control slots always have an fd")
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the slot maps at least control_len(ring) bytes (made so, or
        // checked by map_fd) and lives as long as `self`.
        unsafe { view(self.slot.as_ptr(), control_len(self.ring), 0) }
    }

    /// Descriptor `i % ring`.
    pub fn desc(&self, i: u64) -> &Desc {
        let i = (i % u64::from(self.ring)) as usize;
        let off = std::mem::size_of::<Header>() + i * std::mem::size_of::<Desc>();
        // SAFETY: as in `header`; `view` checks the bounds and alignment.
        unsafe { view(self.slot.as_ptr(), control_len(self.ring), off) }
    }

    /// Raw bytes, for tests that scribble garbage over the block.
    #[doc(hidden)]
    pub fn as_ptr_len(&self) -> (*mut u8, usize) {
        (self.slot.as_ptr(), control_len(self.ring))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_outside_the_mapping_panics_instead_of_reading() {
        let c = Control::create(1).unwrap();
        let (p, len) = c.as_ptr_len();
        // SAFETY: (p, len) is the live mapping of `c` for the whole test.
        let last: &AtomicU64 = unsafe { view(p, len, len - 8) };
        last.store(3, Ordering::Relaxed);
        for (off, why) in [(len - 4, "past"), (usize::MAX, "past"), (4, "misaligned")] {
            let r = std::panic::catch_unwind(|| {
                // SAFETY: as above.
                let _: &AtomicU64 = unsafe { view(p, len, off) };
            });
            let e = r.unwrap_err();
            let msg = e.downcast_ref::<String>().cloned().unwrap_or_else(|| {
                e.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            });
            assert!(msg.contains(why), "{off}: {msg}");
        }
    }

    #[test]
    fn layout_is_stable() {
        assert_eq!(std::mem::size_of::<Header>(), 64);
        assert_eq!(std::mem::size_of::<Desc>(), 64);
        assert_eq!(std::mem::align_of::<Desc>(), 8);
    }

    #[test]
    fn seqlock_snapshot_and_torn_detection() {
        let c = Control::create(4).unwrap();
        let v = DescValue {
            ticket: 7,
            width: 3,
            sent_ns: 99,
            ..Default::default()
        };
        c.desc(7).write(&v);
        assert_eq!(c.desc(3).read(7), Some(v));
        assert_eq!(c.desc(3).read(8), None);
        c.desc(3).ticket.store(0, Ordering::Relaxed);
        assert_eq!(c.desc(3).read(7), None);
    }

    #[test]
    fn open_checks_seal_size_and_magic() {
        let c = Control::create(8).unwrap();
        let fd = c.fd().try_clone_to_owned().unwrap();
        let o = Control::open(fd, 8).unwrap();
        o.header().read_pos.store(5, Ordering::SeqCst);
        assert_eq!(c.header().read_pos.load(Ordering::SeqCst), 5);
        // asking for a larger ring than the file holds is refused
        let fd = c.fd().try_clone_to_owned().unwrap();
        assert!(Control::open(fd, 4096).is_err());
        // a plain unsealed memfd is refused
        let raw = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&raw, 65536).unwrap();
        let e = Control::open(raw, 8).unwrap_err().to_string();
        assert!(e.contains("F_SEAL_SHRINK"), "{e}");
        // bad magic
        c.header().magic.store(1, Ordering::SeqCst);
        let fd = c.fd().try_clone_to_owned().unwrap();
        assert!(Control::open(fd, 8)
            .unwrap_err()
            .to_string()
            .contains("magic"));
    }

    /// Minor page faults this thread took so far (`/proc/thread-self/stat`).
    fn minor_faults() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the ")" that ends the command name; minflt is field 10.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(7).unwrap().parse().unwrap()
    }

    #[test]
    fn no_page_fault_during_a_hand_off() {
        let ring = 256;
        let c = Control::create(ring).unwrap();
        let o = Control::open(c.fd().try_clone_to_owned().unwrap(), ring).unwrap();
        let v = DescValue {
            ticket: 1,
            ..Default::default()
        };
        let before = minor_faults();
        for t in 1..=u64::from(ring) {
            c.desc(t).write(&DescValue { ticket: t, ..v });
            std::hint::black_box(o.desc(t).read(t));
        }
        let after = minor_faults();
        assert_eq!(
            after, before,
            "page faults while writing and reading the ring"
        );
        assert_eq!(o.desc(5).read(5).map(|d| d.ticket), Some(5));
    }
}
