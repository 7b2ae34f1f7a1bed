//! `Lease`: the reference-counted claim on a [`Slot`] that decides reuse.
//!
//! Every holder of frame memory — the Rust `Frame`, each Python buffer export,
//! each DLPack capsule, a queued pipe write, a channel pin — owns a `Lease`
//! clone. When the last clone is dropped the slot goes back to its
//! [`SlotHome`] (a pool's free list, a channel's slot table) or, with no home,
//! is unmapped. The count is `std::sync::Arc`'s, so the orderings are Arc's:
//! a dropping thread's writes happen-before the slot's reuse.
//!
//! Dropping a lease never needs the Python GIL, so it is safe from any thread,
//! from DLPack deleters and at interpreter shutdown.

use crate::Slot;
use rustix::fd::BorrowedFd;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Weak};

/// Where a slot goes when its last lease is dropped.
pub trait SlotHome: Send + Sync + 'static {
    /// Take the slot back. Called exactly once per lease group, on the thread
    /// that dropped the last clone. Must not block for long and must not need
    /// the Python GIL.
    fn give_back(&self, slot: Slot);

    /// The pool behind this home, if it is one (used to allocate copies and
    /// conversion outputs next to the source frame).
    fn pool(self: Arc<Self>) -> Option<crate::FramePool> {
        None
    }
}

pub(crate) struct LeaseInner {
    slot: ManuallyDrop<Slot>,
    home: Option<Arc<dyn SlotHome>>,
}

impl Drop for LeaseInner {
    fn drop(&mut self) {
        // SAFETY: `slot` is taken exactly once, here, and never touched again.
        let slot = unsafe { ManuallyDrop::take(&mut self.slot) };
        match self.home.take() {
            Some(home) => home.give_back(slot),
            None => drop(slot),
        }
    }
}

/// A shared claim on a slot's memory. Cheap to clone (one atomic increment).
#[derive(Clone)]
pub struct Lease {
    inner: Arc<LeaseInner>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("slot", &self.slot_id())
            .field("capacity", &self.capacity())
            .field("holders", &self.holders())
            .finish()
    }
}

impl Lease {
    /// A lease whose slot goes back to `home` when the last clone is dropped.
    pub fn new(slot: Slot, home: Option<Arc<dyn SlotHome>>) -> Lease {
        Lease {
            inner: Arc::new(LeaseInner {
                slot: ManuallyDrop::new(slot),
                home,
            }),
        }
    }

    /// A lease with no home: the slot is unmapped when the last clone goes.
    pub fn detached(slot: Slot) -> Lease {
        Lease::new(slot, None)
    }

    pub(crate) fn downgrade(&self) -> Weak<LeaseInner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn holders_of(weak: &Weak<LeaseInner>) -> usize {
        weak.strong_count()
    }

    /// The pool this lease's slot returns to, if it came from one.
    pub fn pool(&self) -> Option<crate::FramePool> {
        self.inner.home.clone()?.pool()
    }

    /// The slot's memory.
    pub fn slot(&self) -> &Slot {
        &self.inner.slot
    }

    /// Start of the slot's memory.
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.slot.as_ptr()
    }

    /// Mapped bytes of the slot.
    pub fn capacity(&self) -> usize {
        self.inner.slot.capacity()
    }

    /// The slot's id (for stats and tests of reuse order).
    pub fn slot_id(&self) -> u64 {
        self.inner.slot.id()
    }

    /// A token that dies when the slot is unmapped (see [`Slot::liveness`]).
    pub fn slot_liveness(&self) -> Weak<()> {
        self.inner.slot.liveness()
    }

    /// The slot's memfd.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.inner.slot.fd()
    }

    /// How many clones of this lease exist right now.
    pub fn holders(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// True when this is the only clone, so nobody else can observe writes.
    /// (Weak references — the pool's in-use registry — never upgrade, so they
    /// do not count.)
    pub fn is_unique(&self) -> bool {
        Arc::strong_count(&self.inner) == 1
    }

    /// Mutable access to the whole slot, only while this is the sole clone.
    pub fn get_mut(&mut self) -> Option<&mut [u8]> {
        if !self.inner.slot.is_writable() || !self.is_unique() {
            return None;
        }
        let (ptr, len) = (self.as_ptr(), self.capacity());
        // SAFETY: we are the only strong holder and hold `&mut self`, so no other
        // Rust reference to these bytes exists; the mapping is writable and lives
        // as long as `self`.
        Some(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
    }

    /// The slot's bytes as a shared slice.
    ///
    /// # Safety
    /// Nobody may write to the slot while the returned slice is alive (no Python
    /// writable export in use, no X server or peer process writing into it).
    /// framebus itself only writes into a slot before it shares it.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is valid for `capacity` bytes while `self` lives;
        // the caller guarantees there is no concurrent writer.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.capacity()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct CountingHome {
        returned: AtomicUsize,
        ids: Mutex<Vec<u64>>,
    }
    impl SlotHome for CountingHome {
        fn give_back(&self, slot: Slot) {
            self.returned.fetch_add(1, Ordering::SeqCst);
            self.ids.lock().unwrap().push(slot.id());
        }
    }

    #[test]
    fn slot_returns_exactly_once_after_last_clone() {
        let home = Arc::new(CountingHome::default());
        let lease = Lease::new(Slot::new(4096, false).unwrap(), Some(home.clone()));
        let id = lease.slot_id();
        let clones: Vec<_> = (0..10).map(|_| lease.clone()).collect();
        assert_eq!(lease.holders(), 11);
        drop(lease);
        assert_eq!(home.returned.load(Ordering::SeqCst), 0);
        let handles: Vec<_> = clones
            .into_iter()
            .map(|c| std::thread::spawn(move || drop(c)))
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(home.returned.load(Ordering::SeqCst), 1);
        assert_eq!(*home.ids.lock().unwrap(), vec![id]);
    }

    #[test]
    fn get_mut_only_when_unique() {
        let mut lease = Lease::detached(Slot::new(100, false).unwrap());
        lease.get_mut().unwrap()[0] = 9;
        let other = lease.clone();
        assert!(lease.get_mut().is_none());
        drop(other);
        assert_eq!(lease.get_mut().unwrap()[0], 9);
    }
}
