//! `Slot`: one page-aligned, fd-backed shared mapping.
//!
//! A slot owns a memfd and a `MAP_SHARED` mapping of it. Because the memory has
//! a file descriptor, the very same pages can be attached by the X server
//! (MIT-SHM `attach_fd`), mapped by another process (fd passed over a Unix
//! socket) or written to a pipe, with no copy. Dropping a slot unmaps it and
//! closes the fd; once no other process maps it, the kernel frees the pages.
//!
//! A slot can also be **owned by another allocator** ([`Slot::from_owner`],
//! the idea of `bytes::Bytes::from_owner`): memory framebus did not map — a
//! PipeWire buffer, a driver's mapping — wrapped so that it travels through
//! the same `Lease`/`Frame` machinery. Dropping such a slot does not unmap
//! anything: it drops the owner, whose own `Drop` hands the memory back (for
//! PipeWire: queues the buffer back to the stream).
//!
//! A slot can carry a [`SlotHook`] ([`Slot::hooked`]) that hears of the
//! mapping once after it is made and once before it goes — how a feature
//! crate pins a mapping for a device for its whole life (framebus-cuda
//! registers it with `cuMemHostRegister`) without this crate knowing about it.
//! Pools and channel subscribers hook the slots they map; the unmap call lives
//! in `Drop`, so no path that drops a slot can skip it.
//!
//! This module knows nothing about pools or reference counts: see `lease`.

use crate::{Error, Result};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::MemfdFlags;
use rustix::mm::{MapFlags, ProtFlags};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

const HUGE_PAGE: usize = 2 << 20;

static NEXT_SLOT_ID: AtomicU64 = AtomicU64::new(1);

/// The system page size (cached).
pub fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(rustix::param::page_size)
}

/// Round `len` up to a whole number of `unit`s (a power of two).
pub(crate) fn round_up(len: usize, unit: usize) -> usize {
    (len + unit - 1) & !(unit - 1)
}

/// One fd-backed mapping. Not `Clone`: share it through a [`crate::Lease`].
#[derive(Debug)]
pub struct Slot {
    ptr: NonNull<u8>,
    capacity: usize,
    fd: Option<OwnedFd>,
    id: u64,
    huge: bool,
    writable: bool,
    /// Dropped with the slot: holders of [`Slot::liveness`] learn that the
    /// mapping (and our memfd) are gone, e.g. to detach an X server segment.
    alive: Arc<()>,
    /// For memory of another allocator: what releases it (instead of munmap).
    owner: Option<Owner>,
    /// Told before the mapping goes (see [`Slot::hooked`]).
    hook: Option<Hooked>,
}

/// Told about a slot's mapping once after it is made and once before it goes
/// (see [`Slot::hooked`], `FramePool::with_hook`).
///
/// `on_unmap` runs once for each slot `on_map` saw, before `munmap`, when no
/// lease of it is left; never in a `fork()`ed child for a slot hooked in the
/// parent (what the hook did belongs to the parent, e.g. a driver
/// registration). Both run on the thread that maps or drops the slot, without
/// any pool's lock; they must not call back into the slot's pool. A hook
/// cannot refuse a slot: a failure is the hook's to record (the slot is then
/// used as it is).
pub trait SlotHook: Send + Sync + 'static {
    /// `slot` was just mapped (its bytes, length and writability are final).
    fn on_map(&self, slot: &Slot);
    /// `slot` is about to be unmapped.
    fn on_unmap(&self, slot: &Slot);
    /// What the hook wants shown beside the pool's stats (name, value), e.g.
    /// pinned bytes and the time spent registering. None by default.
    fn stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// A slot's hook and the fork generation that called its `on_map`.
struct Hooked {
    hook: std::sync::Arc<dyn SlotHook>,
    generation: u64,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<slot hook>")
    }
}

/// What releases a foreign slot's memory (see [`Slot::from_owner`]).
struct Owner(#[allow(dead_code)] Box<dyn Send + Sync>);

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<another allocator>")
    }
}

// SAFETY: a Slot is an owned mapping; the pointer is valid for `capacity` bytes
// until Drop, from any thread. Concurrent access to the bytes is governed by the
// Lease rules (see lease.rs), not by Slot itself.
unsafe impl Send for Slot {}
// SAFETY: &Slot only hands out the raw pointer and metadata; see above.
unsafe impl Sync for Slot {}

impl Slot {
    /// Create a new memfd of at least `len` bytes (rounded up to pages, or to 2 MiB
    /// huge pages when `huge` is asked and the kernel has them) and map it.
    pub fn new(len: usize, huge: bool) -> Result<Slot> {
        if len == 0 {
            return Err(Error::InvalidDimension {
                what: "slot size",
                value: 0,
                why: "must be at least 1 byte",
            });
        }
        if huge {
            if let Ok(slot) = Self::new_with(round_up(len, HUGE_PAGE), true) {
                return Ok(slot);
            }
            // No hugetlbfs pages reserved (the common case): fall back to normal
            // pages and ask for transparent huge pages, which shmem may honour.
            let slot = Self::new_with(round_up(len, page_size()), false)?;
            // SAFETY: the range is exactly our own live mapping; MADV_HUGEPAGE is
            // only advice and cannot invalidate the memory.
            let _ = unsafe {
                rustix::mm::madvise(
                    slot.ptr.as_ptr().cast(),
                    slot.capacity,
                    rustix::mm::Advice::LinuxHugepage,
                )
            };
            return Ok(slot);
        }
        Self::new_with(round_up(len, page_size()), false)
    }

    fn new_with(capacity: usize, huge: bool) -> Result<Slot> {
        let mut flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
        if huge {
            flags |= MemfdFlags::HUGETLB;
        }
        let fd = rustix::fs::memfd_create("framebus-slot", flags)
            .map_err(|e| Error::os("memfd_create", e))?;
        rustix::fs::ftruncate(&fd, capacity as u64).map_err(|e| Error::os("ftruncate", e))?;
        // Forbid shrinking: a peer that maps this fd can then never SIGBUS on it.
        let _ = rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::SHRINK);
        Self::map(fd, capacity, true, huge)
    }

    /// Map an fd received from elsewhere (another process's slot).
    ///
    /// The fd must be a memfd sealed against shrinking (`F_SEAL_SHRINK`) and
    /// at least `len` bytes long. A file its owner could still truncate would
    /// let a lying or buggy peer make our accesses fault (SIGBUS) at any time
    /// after the check, so the seal is checked first and the size second (a
    /// sealed file can only grow). Every foreign fd mapped anywhere goes
    /// through here, so no caller has to remember the check.
    pub fn map_fd(fd: OwnedFd, len: usize, writable: bool) -> Result<Slot> {
        if len == 0 {
            return Err(Error::InvalidDimension {
                what: "mapping length",
                value: 0,
                why: "must be at least 1 byte",
            });
        }
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|e| Error::Os {
            op: "reading the seals of a received fd (a sealed memfd is required)",
            source: e.into(),
        })?;
        if !seals.contains(rustix::fs::SealFlags::SHRINK) {
            return Err(Error::Os {
                op: "checking a received memfd",
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "it is not sealed against shrinking (F_SEAL_SHRINK), so its owner \
                     could truncate it under the mapping",
                ),
            });
        }
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::os("fstat", e))?;
        if (st.st_size as u64) < len as u64 {
            return Err(Error::BufferTooSmall {
                needed: len,
                got: st.st_size as usize,
                what: "mapping a received slot".into(),
            });
        }
        Self::map(fd, len, writable, false)
    }

    fn map(fd: OwnedFd, capacity: usize, writable: bool, huge: bool) -> Result<Slot> {
        let prot = if writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: a fresh mapping chosen by the kernel (null hint, no MAP_FIXED), so
        // it cannot alias any existing Rust object; the fd is valid for the call.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                capacity,
                prot,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| Error::os("mmap", e))?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Error::Os {
            op: "mmap",
            source: std::io::Error::other("null mapping"),
        })?;
        Ok(Slot {
            ptr,
            capacity,
            fd: Some(fd),
            id: NEXT_SLOT_ID.fetch_add(1, Ordering::Relaxed),
            huge,
            writable,
            alive: Arc::new(()),
            owner: None,
            hook: None,
        })
    }

    /// Wrap `len` bytes at `ptr` that another allocator owns, read-only.
    ///
    /// The slot never unmaps or frees `ptr`: when it is dropped (for a slot
    /// in a [`crate::Lease`], when the last clone goes) it drops `owner`
    /// exactly once, on that thread, and `owner`'s `Drop` gives the memory
    /// back to its allocator. `fd`, if given, is what [`Slot::fd`] returns: a
    /// file whose offset 0 is `ptr` (leave it `None` when the bytes start
    /// elsewhere in the file, so nobody maps the wrong bytes).
    ///
    /// # Safety
    /// * `ptr` must be valid for reads of `len` bytes, from any thread, until
    ///   `owner` is dropped, and `len` must be at least 1.
    /// * Nobody may write those bytes while the slot lives (it is shared
    ///   read-only through leases: frames, buffer views, DLPack capsules).
    /// * `owner`'s `Drop` must not need the Python GIL nor block for long.
    pub unsafe fn from_owner(
        ptr: NonNull<u8>,
        len: usize,
        fd: Option<OwnedFd>,
        owner: Box<dyn Send + Sync>,
    ) -> Slot {
        Slot {
            ptr,
            capacity: len,
            fd,
            id: NEXT_SLOT_ID.fetch_add(1, Ordering::Relaxed),
            huge: false,
            writable: false,
            alive: Arc::new(()),
            owner: Some(Owner(owner)),
            hook: None,
        }
    }

    /// This slot, after `hook.on_map(&slot)`; `hook.on_unmap` runs when it is
    /// dropped (before munmap), unless that happens in a `fork()`ed child.
    /// A slot has one hook: hooking it again first tells the old one
    /// `on_unmap`, as if the mapping had left its care.
    pub fn hooked(mut self, hook: Arc<dyn SlotHook>) -> Slot {
        self.unhook();
        hook.on_map(&self);
        self.hook = Some(Hooked {
            hook,
            generation: crate::fork::generation(),
        });
        self
    }

    /// Tell the hook (if any, and hooked in this process) that the mapping goes.
    fn unhook(&mut self) {
        if let Some(h) = self.hook.take() {
            if h.generation == crate::fork::generation() {
                h.hook.on_unmap(self);
            }
        }
    }

    /// True for a slot made by [`Slot::from_owner`] (memory of another allocator).
    pub fn is_foreign(&self) -> bool {
        self.owner.is_some()
    }

    /// Start of the mapping (page-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Mapped bytes (a multiple of the page size for slots made here).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A process-unique id, stable for the life of the slot.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Backed by hugetlbfs pages.
    pub fn is_huge(&self) -> bool {
        self.huge
    }

    /// Mapped writable.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// A token that dies with the slot (`upgrade()` fails once it is unmapped).
    /// Lets a cache keyed by [`Slot::id`] — e.g. X server segments attached to
    /// this memfd — release its entry when the pool trims or evicts the slot.
    pub fn liveness(&self) -> Weak<()> {
        Arc::downgrade(&self.alive)
    }

    /// The memfd behind the mapping, to attach to the X server or send to a peer.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.unhook();
        if let Some(owner) = self.owner.take() {
            // Another allocator's memory: its owner gives it back.
            drop(owner);
            return;
        }
        // SAFETY: ptr/capacity are exactly the mapping created in `map`, and Drop
        // runs once; every Lease that could hand out this pointer is gone (a Slot
        // is owned by at most one LeaseInner or pool free list at a time).
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_is_page_aligned_and_writable() {
        let s = Slot::new(10, false).unwrap();
        assert_eq!(s.capacity(), page_size());
        assert_eq!(s.as_ptr() as usize % page_size(), 0);
        // SAFETY: fresh mapping of `capacity` bytes owned by this test.
        let bytes = unsafe { std::slice::from_raw_parts_mut(s.as_ptr(), s.capacity()) };
        bytes.fill(7);
        assert!(bytes.iter().all(|&b| b == 7));
        assert!(s.fd().is_some());
    }

    #[test]
    fn second_mapping_of_same_fd_sees_same_bytes() {
        let s = Slot::new(8192, false).unwrap();
        let dup = s.fd().unwrap().try_clone_to_owned().unwrap();
        let r = Slot::map_fd(dup, 8192, false).unwrap();
        assert!(!r.is_writable());
        // SAFETY: both mappings are live and owned by this test; single thread.
        unsafe {
            *s.as_ptr().add(5000) = 42;
            assert_eq!(*r.as_ptr().add(5000), 42);
        }
        assert_ne!(s.as_ptr(), r.as_ptr());
    }

    #[test]
    fn map_fd_refuses_length_past_end_of_file() {
        let s = Slot::new(4096, false).unwrap();
        let dup = s.fd().unwrap().try_clone_to_owned().unwrap();
        let e = Slot::map_fd(dup, 1 << 20, false).unwrap_err();
        assert!(e.to_string().contains("1048576"), "{e}");
    }

    #[test]
    fn map_fd_refuses_fds_that_could_shrink() {
        // a memfd made without sealing support carries F_SEAL_SEAL, not SHRINK
        let plain = rustix::fs::memfd_create("plain", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&plain, 4096).unwrap();
        let e = Slot::map_fd(plain, 4096, false).unwrap_err().to_string();
        assert!(e.contains("F_SEAL_SHRINK"), "{e}");
        // sealable but not sealed
        let open =
            rustix::fs::memfd_create("open", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .unwrap();
        rustix::fs::ftruncate(&open, 4096).unwrap();
        let e = Slot::map_fd(open.try_clone().unwrap(), 4096, false).unwrap_err();
        assert!(e.to_string().contains("F_SEAL_SHRINK"), "{e}");
        // once sealed it maps
        rustix::fs::fcntl_add_seals(&open, rustix::fs::SealFlags::SHRINK).unwrap();
        assert_eq!(Slot::map_fd(open, 4096, false).unwrap().capacity(), 4096);
        // not a memfd at all
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let e = Slot::map_fd(r, 4096, false).unwrap_err().to_string();
        assert!(e.contains("sealed memfd is required"), "{e}");
    }

    #[test]
    fn liveness_dies_with_the_slot() {
        let s = Slot::new(10, false).unwrap();
        let token = s.liveness();
        assert!(token.upgrade().is_some());
        drop(s);
        assert!(token.upgrade().is_none());
    }

    struct CountingOwner(
        Arc<std::sync::atomic::AtomicUsize>,
        #[allow(dead_code)] Box<[u8]>,
    );
    impl Drop for CountingOwner {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn foreign(drops: &Arc<std::sync::atomic::AtomicUsize>) -> Slot {
        let mut mem = vec![7u8; 100].into_boxed_slice();
        let ptr = NonNull::new(mem.as_mut_ptr()).unwrap();
        // SAFETY: `mem` lives inside the owner, so it is valid until the owner
        // drops; nothing writes it.
        unsafe { Slot::from_owner(ptr, 100, None, Box::new(CountingOwner(drops.clone(), mem))) }
    }

    #[test]
    fn foreign_slot_drops_its_owner_exactly_once_after_the_last_lease() {
        let drops = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let slot = foreign(&drops);
        assert!(slot.is_foreign() && !slot.is_writable() && slot.fd().is_none());
        let lease = crate::Lease::detached(slot);
        // SAFETY: read-only, no writer.
        assert_eq!(unsafe { lease.as_slice() }, &[7u8; 100][..]);
        let clones: Vec<_> = (0..8).map(|_| lease.clone()).collect();
        drop(lease);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        let handles: Vec<_> = clones
            .into_iter()
            .map(|c| std::thread::spawn(move || drop(c)))
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn foreign_slot_in_a_frame_is_read_only_and_released_with_it() {
        let drops = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let lease = crate::Lease::detached(foreign(&drops));
        let layout = crate::FrameLayout::new(5, 5, crate::PixelFormat::Bgra, None).unwrap();
        let frame = crate::Frame::new(lease, layout).unwrap();
        assert!(!frame.is_writable());
        let mut lease = frame.clone().into_lease();
        assert!(
            lease.get_mut().is_none(),
            "foreign memory is never handed out mutably"
        );
        drop((frame, lease));
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn huge_request_falls_back_cleanly() {
        let s = Slot::new(3 << 20, true).unwrap();
        assert!(s.capacity() >= 3 << 20);
    }
}
