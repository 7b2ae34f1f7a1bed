//! `FramePool`: a bounded, observable allocator of fd-backed slots.
//!
//! * Reuse: an acquire takes the **most recently freed** free slot that fits
//!   (capacity ≥ request and ≤ 2 × request, so a thumbnail never pins a 4K slot
//!   and a hot, cache-warm slot is preferred). Otherwise a new slot is mapped.
//! * Limits: `max_bytes` (bytes mapped, free slots included) and `max_slots`.
//!   At the limit, free slots that do not fit are unmapped oldest-first to make
//!   room; if every slot is in use the pool blocks (with a timeout) or fails
//!   with [`Error::PoolExhausted`], naming the limit and the slots' holders.
//! * `trim()` unmaps every free slot; with the memfd closed the kernel frees the
//!   pages, so RSS really drops.
//! * `close()` stops new acquires; slots still leased are unmapped when their
//!   last lease goes.
//!
//! * Bounded by default: [`PoolConfig::default()`] limits the pool to
//!   [`default_max_bytes()`] = min(8 GiB, half the physical RAM), so a request
//!   for an absurd frame (10⁶ × 10⁶ BGRA) fails at once with
//!   [`Error::TooLarge`] instead of mapping terabytes. Set `max_bytes: None`
//!   explicitly for an unbounded pool.
//! * Fork safety: a child created by `fork()` inherits the parent's slots,
//!   which are `MAP_SHARED` memfd mappings the parent keeps using. On its first
//!   use in a child (the [`crate::fork::generation`] changed) the pool unmaps
//!   the inherited free slots (in the child only) and marks every slot leased
//!   before the fork as foreign: when such a lease is dropped in the child the
//!   slot is unmapped, never reused. The child's accounting starts from zero.
//!   Limitation: as with any lock, forking while another thread is inside the
//!   pool's mutex (a few instructions of bookkeeping) leaves the child's copy
//!   locked; fork from a thread that owns the pool's users, or before them.
//!
//! * Slot hooks: [`FramePool::with_hook`] gives the pool a [`SlotHook`] that
//!   hears of every slot right after it is mapped and right before it is
//!   unmapped (eviction, trim, close, the pool's own drop) — how a feature
//!   crate pins each slot once for the whole life of its mapping (framebus-cuda
//!   registers it with `cuMemHostRegister`) without the core knowing about it.
//!   The hook rides on each slot ([`Slot::hooked`]), so every drop tells it.
//!   Slots inherited through `fork` are dropped in the child without the hook
//!   (the registration belongs to the parent's driver context).
//!
//! Locking: one mutex around the bookkeeping; `mmap`/`munmap` and the hook's
//! calls run outside it.
//! Nothing here touches Python, so dropping a lease never needs the GIL.

use crate::lease::LeaseInner;
use crate::slot::{page_size, round_up};
use crate::{Error, Frame, FrameLayout, Lease, PixelFormat, Result, Slot, SlotHome, SlotHook};
// Keys are slot ids this pool hands out itself: no HashDoS to guard against,
// so FxHash (one multiply) instead of SipHash, whose code was a tenth of the
// instruction-cache misses of a cold hand-off.
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

/// What `acquire` does when the pool is at its limit and every slot is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhausted {
    /// Fail at once with [`Error::PoolExhausted`].
    Error,
    /// Wait for a slot to be released, up to the timeout (`None` = forever).
    Block(Option<Duration>),
}

/// The byte limit of [`PoolConfig::default()`]: min(8 GiB, half the physical
/// RAM as reported by `sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE)`), or
/// 8 GiB when the RAM size is unknown. Computed once.
pub fn default_max_bytes() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        const CAP: u64 = 8 << 30;
        // SAFETY: sysconf has no preconditions; it only reads system values.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let half = if pages > 0 && page > 0 {
            (pages as u64).saturating_mul(page as u64) / 2
        } else {
            CAP
        };
        usize::try_from(half.min(CAP)).unwrap_or(usize::MAX)
    })
}

/// How a pool is bounded and backed.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Upper bound on bytes mapped (free and in use). `None` = unbounded.
    /// The default is [`default_max_bytes()`].
    pub max_bytes: Option<usize>,
    /// Upper bound on slots mapped. `None` = unbounded.
    pub max_slots: Option<usize>,
    /// Policy at the limit.
    pub on_exhausted: Exhausted,
    /// Ask for huge pages (hugetlbfs, else transparent huge pages).
    pub huge_pages: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_bytes: Some(default_max_bytes()),
            max_slots: None,
            on_exhausted: Exhausted::Error,
            huge_pages: false,
        }
    }
}

/// A snapshot of a pool's accounting. Every number is exact at the instant of the call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub slots: usize,
    pub slots_in_use: usize,
    pub slots_free: usize,
    pub bytes_mapped: usize,
    pub bytes_in_use: usize,
    pub bytes_free: usize,
    pub high_water_bytes: usize,
    pub max_bytes: Option<usize>,
    pub max_slots: Option<usize>,
    /// Successful acquires.
    pub acquires: u64,
    /// Acquires served from a free slot.
    pub reuses: u64,
    /// Slots mapped.
    pub maps: u64,
    /// Slots unmapped (trim, eviction, close, release after close).
    pub unmaps: u64,
    /// Acquires that had to wait for a release.
    pub waits: u64,
    /// Acquires that failed with `PoolExhausted`.
    pub exhausted: u64,
    pub closed: bool,
}

struct InUse {
    lease: Weak<LeaseInner>,
    capacity: usize,
    since: Instant,
}

#[derive(Default)]
struct PoolState {
    /// The fork generation this state belongs to (see [`crate::fork`]).
    generation: u64,
    /// Slots leased before a fork, in a forked child: never reused, unmapped
    /// (in this process only) when their last lease here is dropped.
    foreign: FxHashSet<u64>,
    /// Free slots, oldest first; the most recently freed is at the end.
    free: Vec<Slot>,
    in_use: FxHashMap<u64, InUse>,
    /// Bytes of slots mapped or being mapped (reserved before mmap).
    bytes_mapped: usize,
    slots_mapped: usize,
    bytes_in_use: usize,
    stats: PoolStats,
}

pub(crate) struct PoolShared {
    config: PoolConfig,
    state: Mutex<PoolState>,
    released: Condvar,
    hook: Option<Arc<dyn SlotHook>>,
}

impl PoolShared {
    /// Unmap `slots` (outside the lock); a hooked slot tells its hook first.
    fn unmap(&self, slots: Vec<Slot>) {
        drop(slots);
    }
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        // The last handle and the last lease are gone: unmap the free slots
        // (those of this process's generation; a forked child's were dropped).
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let free = if st.generation == crate::fork::generation() {
            std::mem::take(&mut st.free)
        } else {
            Vec::new()
        };
        self.unmap(free);
    }
}

/// A bounded pool of fd-backed frame slots. Clones share the same pool.
#[derive(Clone)]
pub struct FramePool {
    shared: Arc<PoolShared>,
}

impl std::fmt::Debug for FramePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramePool")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for FramePool {
    fn default() -> Self {
        FramePool::new(PoolConfig::default())
    }
}

impl FramePool {
    pub fn new(config: PoolConfig) -> FramePool {
        FramePool::build(config, None)
    }

    /// A pool whose `hook` hears of every slot mapped and unmapped (see
    /// [`SlotHook`]).
    pub fn with_hook(config: PoolConfig, hook: Arc<dyn SlotHook>) -> FramePool {
        FramePool::build(config, Some(hook))
    }

    fn build(config: PoolConfig, hook: Option<Arc<dyn SlotHook>>) -> FramePool {
        FramePool {
            shared: Arc::new(PoolShared {
                config,
                state: Mutex::new(PoolState {
                    generation: crate::fork::generation(),
                    ..PoolState::default()
                }),
                released: Condvar::new(),
                hook,
            }),
        }
    }

    /// The pool's slot hook, if it was made [`FramePool::with_hook`].
    pub fn hook(&self) -> Option<&Arc<dyn SlotHook>> {
        self.shared.hook.as_ref()
    }

    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// Lease a slot of at least `len` bytes, following the pool's policy at the limit.
    pub fn acquire(&self, len: usize) -> Result<Lease> {
        self.acquire_with(len, self.shared.config.on_exhausted)
    }

    /// Lease a slot of at least `len` bytes with an explicit policy at the limit.
    pub fn acquire_with(&self, len: usize, policy: Exhausted) -> Result<Lease> {
        self.acquire_counted(len, policy, true, true)
    }

    /// One slice of a longer wait for a slot (a caller that checks for
    /// Ctrl-C between slices): like `acquire_with(len, Block(Some(slice)))`,
    /// but a slice that ends without a slot is `Ok(None)` and is not counted
    /// as `exhausted`, and the wait is counted in `waits` only on the `first`
    /// slice — so the counters describe the caller's one wait. A caller that
    /// gives up ends with `acquire_with(len, Exhausted::Error)`, which counts
    /// and describes the failure.
    pub fn acquire_slice(&self, len: usize, slice: Duration, first: bool) -> Result<Option<Lease>> {
        match self.acquire_counted(len, Exhausted::Block(Some(slice)), first, false) {
            Err(Error::PoolExhausted { .. }) => Ok(None),
            r => r.map(Some),
        }
    }

    fn acquire_counted(
        &self,
        len: usize,
        policy: Exhausted,
        count_wait: bool,
        count_exhausted: bool,
    ) -> Result<Lease> {
        if len == 0 {
            return Err(Error::InvalidDimension {
                what: "frame size",
                value: 0,
                why: "must be at least 1 byte",
            });
        }
        let cfg = &self.shared.config;
        let unit = if cfg.huge_pages { 2 << 20 } else { page_size() };
        let needed = round_up(len, unit);
        if let Some(max) = cfg.max_bytes {
            if needed > max {
                return Err(Error::TooLarge {
                    requested: len,
                    limit_name: "max_bytes",
                    limit: max,
                });
            }
        }
        if cfg.max_slots == Some(0) {
            return Err(Error::TooLarge {
                requested: len,
                limit_name: "max_slots",
                limit: 0,
            });
        }
        let start = Instant::now();
        let deadline = match policy {
            // A timeout too long to add to the clock is as good as forever.
            Exhausted::Block(Some(t)) => start.checked_add(t),
            _ => None,
        };
        let mut waited = false;
        let mut st = self.lock();
        loop {
            if st.stats.closed {
                return Err(Error::PoolClosed);
            }
            // 1. Most recently freed slot that fits.
            if let Some(i) = st
                .free
                .iter()
                .rposition(|s| s.capacity() >= needed && s.capacity() <= fit_limit(needed))
            {
                let slot = st.free.remove(i);
                st.stats.reuses += 1;
                return Ok(self.lend(st, slot));
            }
            // 2. Room for a new mapping, after evicting free slots oldest-first.
            let mut evicted = Vec::new();
            while !self.has_room(&st, needed) && !st.free.is_empty() {
                let s = st.free.remove(0);
                st.bytes_mapped -= s.capacity();
                st.slots_mapped -= 1;
                st.stats.unmaps += 1;
                evicted.push(s);
            }
            if self.has_room(&st, needed) {
                st.bytes_mapped += needed;
                st.slots_mapped += 1;
                drop(st);
                self.shared.unmap(evicted); // munmap outside the lock
                let made = Slot::new(needed, cfg.huge_pages).map(|slot| match &self.shared.hook {
                    Some(h) => slot.hooked(h.clone()),
                    None => slot,
                });
                let mut st = self.lock();
                return match made {
                    Ok(slot) => {
                        // The slot may be larger than reserved (huge page rounding).
                        st.bytes_mapped = st.bytes_mapped - needed + slot.capacity();
                        st.stats.maps += 1;
                        Ok(self.lend(st, slot))
                    }
                    Err(e) => {
                        st.bytes_mapped -= needed;
                        st.slots_mapped -= 1;
                        Err(e)
                    }
                };
            }
            if !evicted.is_empty() {
                // Not reached in practice (eviction stops only with room or no
                // free slot), but an unmap must never skip the hook.
                drop(st);
                self.shared.unmap(evicted);
                st = self.lock();
                continue;
            }
            // 3. Everything is in use: wait or fail.
            let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
            if policy == Exhausted::Error || timed_out {
                if count_exhausted {
                    st.stats.exhausted += 1;
                }
                return Err(self.exhausted_error(&st, len, waited.then(|| start.elapsed())));
            }
            if !waited {
                if count_wait {
                    st.stats.waits += 1;
                }
                waited = true;
            }
            st = match deadline {
                None => self
                    .shared
                    .released
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    self.shared
                        .released
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Lease a slot for a frame of the given geometry and return it as a writable frame.
    pub fn acquire_frame(
        &self,
        width: usize,
        height: usize,
        format: PixelFormat,
        stride: Option<usize>,
    ) -> Result<Frame> {
        let layout = FrameLayout::new(width, height, format, stride)?;
        let lease = self.acquire(layout.byte_len())?;
        Frame::new(lease, layout)
    }

    /// Unmap every free slot. Returns the bytes given back to the OS.
    pub fn trim(&self) -> usize {
        let mut st = self.lock();
        let free = std::mem::take(&mut st.free);
        let bytes: usize = free.iter().map(Slot::capacity).sum();
        st.bytes_mapped -= bytes;
        st.slots_mapped -= free.len();
        st.stats.unmaps += free.len() as u64;
        drop(st);
        self.shared.unmap(free);
        bytes
    }

    /// Stop handing out slots and unmap the free ones. Leased slots are unmapped
    /// when their last lease is dropped. Waiters get [`Error::PoolClosed`].
    pub fn close(&self) {
        self.lock().stats.closed = true;
        self.trim();
        self.shared.released.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().stats.closed
    }

    /// Exact accounting at this instant.
    pub fn stats(&self) -> PoolStats {
        let st = self.lock();
        let mut s = st.stats.clone();
        s.slots = st.slots_mapped;
        s.slots_in_use = st.in_use.len();
        s.slots_free = st.free.len();
        s.bytes_mapped = st.bytes_mapped;
        s.bytes_in_use = st.bytes_in_use;
        s.bytes_free = st.free.iter().map(Slot::capacity).sum();
        s.max_bytes = self.shared.config.max_bytes;
        s.max_slots = self.shared.config.max_slots;
        s
    }

    /// True when both handles are the same pool.
    pub fn same_pool(&self, other: &FramePool) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.shared.lock()
    }

    fn has_room(&self, st: &PoolState, needed: usize) -> bool {
        let cfg = &self.shared.config;
        cfg.max_bytes.is_none_or(|m| st.bytes_mapped + needed <= m)
            && cfg.max_slots.is_none_or(|m| st.slots_mapped < m)
    }

    fn lend(&self, mut st: MutexGuard<'_, PoolState>, slot: Slot) -> Lease {
        let id = slot.id();
        let capacity = slot.capacity();
        let home: Arc<dyn SlotHome> = self.shared.clone();
        let lease = Lease::new(slot, Some(home));
        st.in_use.insert(
            id,
            InUse {
                lease: lease.downgrade(),
                capacity,
                since: Instant::now(),
            },
        );
        st.bytes_in_use += capacity;
        st.stats.acquires += 1;
        st.stats.high_water_bytes = st.stats.high_water_bytes.max(st.bytes_in_use);
        lease
    }

    fn exhausted_error(&self, st: &PoolState, requested: usize, waited: Option<Duration>) -> Error {
        let cfg = &self.shared.config;
        let (limit_name, limit) = match (cfg.max_slots, cfg.max_bytes) {
            (Some(m), _) if st.slots_mapped >= m => ("max_slots", m),
            (_, Some(m)) => ("max_bytes", m),
            (Some(m), None) => ("max_slots", m),
            (None, None) => ("max_bytes", usize::MAX),
        };
        let mut held: Vec<(&u64, &InUse)> = st.in_use.iter().collect();
        held.sort_by_key(|(_, u)| u.since);
        let now = Instant::now();
        let mut holders: Vec<String> = held
            .iter()
            .take(8)
            .map(|(id, u)| {
                format!(
                    "slot {id} ({} bytes, {} holder(s), held {:.3} s)",
                    u.capacity,
                    Lease::holders_of(&u.lease),
                    now.duration_since(u.since).as_secs_f64()
                )
            })
            .collect();
        if held.len() > 8 {
            holders.push(format!("and {} more", held.len() - 8));
        }
        Error::PoolExhausted {
            limit_name,
            limit,
            requested,
            in_use_slots: st.in_use.len(),
            in_use_bytes: st.bytes_in_use,
            waited,
            holders: holders.join(", "),
        }
    }
}

/// The largest free slot a request of `needed` bytes may take.
fn fit_limit(needed: usize) -> usize {
    needed.saturating_mul(2)
}

impl PoolShared {
    /// The bookkeeping, after forgetting what a fork made foreign.
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding the lock cannot leave the counters half-updated in
        // a way that matters for memory safety, so poisoning is ignored.
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let generation = crate::fork::generation();
        if st.generation != generation {
            st.forked(generation);
        }
        st
    }
}

impl PoolState {
    /// First use in a forked child: the parent still uses every inherited slot
    /// (they are shared mappings), so drop the free ones — `munmap` here only
    /// affects this process — and remember the leased ones as foreign. The
    /// accounting starts fresh; only `closed` carries over.
    fn forked(&mut self, generation: u64) {
        let free = std::mem::take(&mut self.free);
        let in_use = std::mem::take(&mut self.in_use);
        self.foreign.extend(in_use.into_keys());
        self.generation = generation;
        self.bytes_mapped = 0;
        self.slots_mapped = 0;
        self.bytes_in_use = 0;
        self.stats = PoolStats {
            closed: self.stats.closed,
            ..PoolStats::default()
        };
        // Unmapped under the lock: once per pool per fork, in the child.
        drop(free);
    }
}

impl SlotHome for PoolShared {
    fn give_back(&self, slot: Slot) {
        let mut st = self.lock();
        if st.foreign.remove(&slot.id()) {
            // Leased before a fork: the other process may still use it.
            drop(st);
            drop(slot);
            return;
        }
        if st.in_use.remove(&slot.id()).is_some() {
            st.bytes_in_use -= slot.capacity();
        }
        if st.stats.closed {
            st.bytes_mapped -= slot.capacity();
            st.slots_mapped -= 1;
            st.stats.unmaps += 1;
            drop(st);
            self.unmap(vec![slot]);
        } else {
            st.free.push(slot);
            drop(st);
        }
        self.released.notify_all();
    }

    fn pool(self: Arc<Self>) -> Option<FramePool> {
        Some(FramePool { shared: self })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Poll `cond` until it holds; fail the test after 10 s.
    fn wait_until(mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "condition not reached in 10 s");
            std::thread::yield_now();
        }
    }

    fn pool(max_bytes: Option<usize>, max_slots: Option<usize>, on: Exhausted) -> FramePool {
        FramePool::new(PoolConfig {
            max_bytes,
            max_slots,
            on_exhausted: on,
            huge_pages: false,
        })
    }

    #[test]
    fn reuses_most_recently_freed_fitting_slot() {
        let p = FramePool::default();
        let a = p.acquire(100_000).unwrap();
        let b = p.acquire(100_000).unwrap();
        let c = p.acquire(100_000).unwrap();
        let (ia, ib, ic) = (a.slot_id(), b.slot_id(), c.slot_id());
        drop(b);
        drop(a);
        drop(c);
        assert_eq!(p.acquire(100_000).unwrap().slot_id(), ic);
        // the dropped lease above went back on top again
        let x = p.acquire(100_000).unwrap();
        let y = p.acquire(100_000).unwrap();
        let z = p.acquire(100_000).unwrap();
        assert_eq!((x.slot_id(), y.slot_id(), z.slot_id()), (ic, ia, ib));
        let s = p.stats();
        assert_eq!(s.maps, 3);
        assert_eq!(s.reuses, 4);
    }

    #[test]
    fn small_frame_does_not_take_a_huge_slot() {
        let p = FramePool::default();
        let big = p.acquire(33 << 20).unwrap();
        let big_id = big.slot_id();
        drop(big);
        let small = p.acquire(1 << 20).unwrap();
        assert_ne!(small.slot_id(), big_id);
        assert!(small.capacity() < 2 << 20);
        assert_eq!(p.acquire(33 << 20).unwrap().slot_id(), big_id);
    }

    #[test]
    fn slot_is_not_reused_while_any_clone_lives() {
        let p = pool(None, Some(1), Exhausted::Error);
        let a = p.acquire(4096).unwrap();
        let view = a.clone();
        drop(a);
        let e = p.acquire(4096).unwrap_err().to_string();
        assert!(e.contains("max_slots=1"), "{e}");
        assert!(e.contains("1 holder(s)"), "{e}");
        drop(view);
        p.acquire(4096).unwrap();
    }

    #[test]
    fn too_large_is_refused_upfront() {
        let p = pool(Some(1 << 20), None, Exhausted::Block(None));
        let e = p.acquire(2 << 20).unwrap_err().to_string();
        assert!(e.contains("max_bytes=1048576"), "{e}");
        assert!(e.contains("2097152"), "{e}");
    }

    #[test]
    fn blocking_acquire_wakes_on_release_and_times_out() {
        let p = pool(
            None,
            Some(1),
            Exhausted::Block(Some(Duration::from_millis(50))),
        );
        let a = p.acquire(4096).unwrap();
        let t = Instant::now();
        let e = p.acquire(4096).unwrap_err().to_string();
        assert!(t.elapsed() >= Duration::from_millis(45));
        assert!(e.contains("waited"), "{e}");
        let p2 = p.clone();
        let h = std::thread::spawn(move || {
            p2.acquire_with(4096, Exhausted::Block(Some(Duration::from_secs(5))))
                .map(|l| l.slot_id())
        });
        // The waiter counts itself (under the lock, right before it sleeps on
        // the condition variable), so waits == 2 means it is waiting now.
        wait_until(|| p.stats().waits == 2);
        let id = a.slot_id();
        drop(a);
        assert_eq!(h.join().unwrap().unwrap(), id);
        assert_eq!(p.stats().waits, 2);
    }

    #[test]
    fn evicts_free_slots_that_do_not_fit_to_make_room() {
        let p = pool(Some(3 << 20), None, Exhausted::Error);
        drop(p.acquire(1 << 20).unwrap());
        drop(p.acquire(100).unwrap());
        let big = p.acquire(3 << 20).unwrap();
        assert_eq!(p.stats().bytes_mapped, big.capacity());
        assert_eq!(p.stats().unmaps, 2);
    }

    #[test]
    fn stats_trim_and_close() {
        let p = FramePool::default();
        let a = p.acquire(10_000).unwrap();
        let b = p.acquire(10_000).unwrap();
        let page = page_size();
        let cap = round_up(10_000, page);
        drop(b);
        let s = p.stats();
        assert_eq!((s.slots, s.slots_in_use, s.slots_free), (2, 1, 1));
        assert_eq!(
            (s.bytes_mapped, s.bytes_in_use, s.bytes_free),
            (2 * cap, cap, cap)
        );
        assert_eq!(s.high_water_bytes, 2 * cap);
        assert_eq!(p.trim(), cap);
        assert_eq!(p.stats().bytes_mapped, cap);
        p.close();
        assert!(matches!(p.acquire(1), Err(Error::PoolClosed)));
        // a lease outliving close() still reads valid memory, then is unmapped
        // SAFETY: single-threaded test, nobody writes concurrently.
        unsafe { assert_eq!(a.as_slice().len(), cap) };
        drop(a);
        let s = p.stats();
        assert_eq!((s.slots, s.bytes_mapped, s.bytes_in_use), (0, 0, 0));
    }

    /// Records every (ptr, len) mapped and unmapped, and fails the test if a
    /// slot is unmapped that was not mapped, or twice.
    #[derive(Default)]
    struct Recorder {
        live: Mutex<FxHashMap<usize, usize>>,
        maps: std::sync::atomic::AtomicUsize,
        unmaps: std::sync::atomic::AtomicUsize,
    }

    impl SlotHook for Recorder {
        fn on_map(&self, slot: &Slot) {
            let (ptr, len) = (slot.as_ptr(), slot.capacity());
            let old = self.live.lock().unwrap().insert(ptr as usize, len);
            assert!(old.is_none(), "mapped twice");
            self.maps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn on_unmap(&self, slot: &Slot) {
            let (ptr, len) = (slot.as_ptr(), slot.capacity());
            // The mapping must still be there: touch it.
            // SAFETY: on_unmap runs before munmap, the slot has no lease left.
            unsafe { ptr.write_volatile(1) };
            let old = self.live.lock().unwrap().remove(&(ptr as usize));
            assert_eq!(old, Some(len), "unmapped a slot that was not mapped");
            self.unmaps
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn slot_hook_sees_every_map_and_unmap_once() {
        use std::sync::atomic::Ordering::Relaxed;
        let rec = Arc::new(Recorder::default());
        let p = FramePool::with_hook(
            PoolConfig {
                max_bytes: Some(3 << 20),
                ..PoolConfig::default()
            },
            rec.clone(),
        );
        assert!(p.hook().is_some());
        let a = p.acquire(1 << 20).unwrap();
        let b = p.acquire(100).unwrap();
        assert_eq!(rec.maps.load(Relaxed), 2);
        drop(a);
        drop(b);
        // reuse: no new map
        drop(p.acquire(1 << 20).unwrap());
        assert_eq!(rec.maps.load(Relaxed), 2);
        // eviction of both free slots to make room for 3 MiB
        let big = p.acquire(3 << 20).unwrap();
        assert_eq!((rec.maps.load(Relaxed), rec.unmaps.load(Relaxed)), (3, 2));
        drop(big);
        assert_eq!(p.trim(), 3 << 20);
        assert_eq!(rec.unmaps.load(Relaxed), 3);
        // close with a lease out: unmapped (and told) when the lease goes
        let c = p.acquire(5000).unwrap();
        let d = p.acquire(5000).unwrap();
        drop(d);
        p.close();
        assert_eq!(rec.unmaps.load(Relaxed), 4);
        drop(c);
        assert_eq!(rec.unmaps.load(Relaxed), 5);
        assert!(rec.live.lock().unwrap().is_empty());
        // the pool's own drop unmaps its free slots through the hook too
        let rec2 = Arc::new(Recorder::default());
        let q = FramePool::with_hook(PoolConfig::default(), rec2.clone());
        let e = q.acquire(10).unwrap();
        drop(q);
        drop(e); // back to the (now handle-less) pool, which then drops
        assert_eq!((rec2.maps.load(Relaxed), rec2.unmaps.load(Relaxed)), (1, 1));
    }

    #[test]
    fn lease_knows_its_pool() {
        let p = FramePool::default();
        let a = p.acquire(10).unwrap();
        assert!(a.pool().unwrap().same_pool(&p));
        assert!(Lease::detached(Slot::new(10, false).unwrap())
            .pool()
            .is_none());
    }

    #[test]
    fn lease_outlives_the_pool_handle() {
        let p = FramePool::default();
        let a = p.acquire(5000).unwrap();
        drop(p);
        // SAFETY: single-threaded test, nobody writes concurrently.
        unsafe { assert_eq!(a.as_slice()[0], 0) };
    }

    #[test]
    fn many_threads_never_share_a_slot() {
        use std::collections::HashSet;
        let p = pool(
            None,
            Some(6),
            Exhausted::Block(Some(Duration::from_secs(10))),
        );
        const ROUNDS: u64 = 2000;
        let live: Arc<Mutex<HashSet<u64>>> = Arc::default();
        // All threads start together, so they really contend.
        let start = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (p, live, start) = (p.clone(), live.clone(), start.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    start.wait();
                    while n < ROUNDS {
                        let mut l = p.acquire(4096 * (1 + t % 2)).unwrap();
                        assert!(live.lock().unwrap().insert(l.slot_id()), "double use");
                        let mark = (t as u8).wrapping_mul(31).wrapping_add(n as u8);
                        l.get_mut().unwrap()[..64].fill(mark);
                        std::thread::yield_now();
                        assert!(l.get_mut().unwrap()[..64].iter().all(|&b| b == mark));
                        assert!(live.lock().unwrap().remove(&l.slot_id()));
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 8 * ROUNDS);
        let s = p.stats();
        assert_eq!(s.slots_in_use, 0);
        assert!(s.slots <= 6);
        assert_eq!(s.slots_free, s.slots, "no slot lost");
        assert_eq!(s.acquires, total);
    }

    #[test]
    fn default_pool_is_bounded() {
        let max = default_max_bytes();
        assert!(max <= 8 << 30, "{max}");
        assert!(max >= 64 << 20, "half the RAM of any test machine: {max}");
        let p = FramePool::default();
        assert_eq!(p.config().max_bytes, Some(max));
        assert_eq!(p.stats().max_bytes, Some(max));
        // 10^6 x 10^6 BGRA = 4 TB: refused at once, nothing mapped.
        let t = Instant::now();
        let e = p.acquire(4_000_000_000_000).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(
            matches!(e, Error::TooLarge { limit, .. } if limit == max),
            "{e}"
        );
        let m = e.to_string();
        assert!(
            m.contains("4000000000000") && m.contains(&format!("max_bytes={max}")),
            "{m}"
        );
        // The same through the frame API.
        let e = p
            .acquire_frame(1_000_000, 1_000_000, PixelFormat::Bgra, None)
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::TooLarge {
                    requested: 4_000_000_000_000,
                    ..
                }
            ),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(p.stats().maps, 0);
    }

    /// The pattern of word `i` of a frame tagged `tag`.
    fn word(tag: u64, i: usize) -> u64 {
        tag.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64
    }

    fn fill(l: &mut Lease, tag: u64, len: usize) {
        let b = l.get_mut().expect("a fresh lease is unique");
        for (i, w) in b[..len].chunks_exact_mut(8).enumerate() {
            w.copy_from_slice(&word(tag, i).to_ne_bytes());
        }
    }

    /// True when the first `len` bytes still hold `tag`'s pattern.
    fn holds(l: &Lease, tag: u64, len: usize) -> bool {
        // SAFETY: every writer of this slot in every process writes only
        // slots it holds alone; a concurrent writer here would be exactly the
        // bug under test and shows up as a wrong pattern (plain u64 reads of
        // shared memory cannot fault).
        let b = unsafe { &l.as_slice()[..len] };
        b.chunks_exact(8)
            .enumerate()
            .all(|(i, w)| u64::from_ne_bytes(w.try_into().unwrap()) == word(tag, i))
    }

    /// Acquire, fill and verify `rounds` frames, keeping a ring of `keep`
    /// held and checking every held frame each round. Returns the number of
    /// corrupted frames seen.
    fn churn(p: &FramePool, tag0: u64, rounds: u64, keep: usize, len: usize) -> u64 {
        let mut ring: std::collections::VecDeque<(Lease, u64)> = Default::default();
        let mut bad = 0;
        for n in 0..rounds {
            let tag = tag0 + n;
            let mut l = match p.acquire(len) {
                Ok(l) => l,
                Err(_) => return u64::MAX,
            };
            fill(&mut l, tag, len);
            ring.push_back((l, tag));
            if ring.len() > keep {
                let (l, tag) = ring.pop_front().unwrap();
                bad += u64::from(!holds(&l, tag, len));
            }
            if n % 4 == 0 {
                bad += ring.iter().filter(|(l, t)| !holds(l, *t, len)).count() as u64;
            }
        }
        bad
    }

    #[test]
    fn forked_children_never_share_a_slot_with_the_parent() {
        use crate::fork::testing::{exit_code, fork_child, wait_bounded};
        const LEN: usize = 16 << 10;
        const CHILDREN: u64 = 4;
        const ROUNDS: u64 = 2000;
        let p = FramePool::default();
        // Frames the parent holds across the fork, and free slots of the same
        // size that a child must not reuse either.
        let mut held = Vec::new();
        for t in 0..8u64 {
            let mut l = p.acquire(LEN).unwrap();
            fill(&mut l, 1000 + t, LEN);
            held.push((l, 1000 + t));
        }
        for _ in 0..6 {
            let mut l = p.acquire(LEN).unwrap();
            fill(&mut l, 7, LEN);
            drop(l);
        }
        let parent_ids: Vec<u64> = held.iter().map(|(l, _)| l.slot_id()).collect();
        let pids: Vec<_> = (1..=CHILDREN)
            .map(|c| {
                let (p, parent_ids, held) = (&p, &parent_ids, &mut held);
                fork_child(move || {
                    // The child's copy of the parent's only lease clones.
                    let held = std::mem::take(held);
                    // The inherited frames still read the parent's pixels.
                    if !held.iter().all(|(l, t)| holds(l, *t, LEN)) {
                        return 2;
                    }
                    // The last clones (in this process) of the parent's leases go
                    // away: the slots must be unmapped here, not put on our free
                    // list for `churn` to reuse.
                    drop(held);
                    let s = p.stats();
                    if (s.slots, s.slots_in_use, s.slots_free, s.bytes_mapped) != (0, 0, 0, 0) {
                        return 3;
                    }
                    if churn(p, c << 40, ROUNDS, 6, LEN) != 0 {
                        return 4;
                    }
                    let s = p.stats();
                    if s.acquires != ROUNDS || s.slots_in_use != 0 || s.slots > 7 {
                        return 5;
                    }
                    let l = p.acquire(LEN).unwrap();
                    if parent_ids.contains(&l.slot_id()) {
                        return 6;
                    }
                    0
                })
            })
            .collect();
        // The parent keeps working, concurrently with its children.
        assert_eq!(
            churn(&p, 1 << 50, ROUNDS, 6, LEN),
            0,
            "parent frames corrupted"
        );
        for pid in pids {
            let st = wait_bounded(pid, Duration::from_secs(120));
            assert_eq!(exit_code(st), Ok(0), "child {pid} failed");
        }
        // Children have exited: their writes (if any went astray) are all in.
        for (l, t) in &held {
            assert!(holds(l, *t, LEN), "held frame {t} was overwritten");
        }
        let s = p.stats();
        assert_eq!(s.slots_in_use, 8);
        assert_eq!(s.acquires, 8 + 6 + ROUNDS);
    }

    #[test]
    fn lease_held_across_fork_is_unmapped_in_the_child_pool_unaffected() {
        use crate::fork::testing::{exit_code, fork_child, wait_bounded};
        let p = pool(None, Some(1), Exhausted::Error);
        let mut a = p.acquire(4096).unwrap();
        a.get_mut().unwrap()[0] = 42;
        let id = a.slot_id();
        let mut a = Some(a);
        let pid = fork_child(|| {
            // The child's copy of the parent's only clone.
            let a = a.take().unwrap();
            let liveness = a.slot_liveness();
            drop(a);
            // The slot was unmapped (liveness died), and the child's limit of
            // one slot is free for a new one of its own (a fresh, zeroed memfd).
            if liveness.upgrade().is_some() {
                return 2;
            }
            let Ok(mut b) = p.acquire(4096) else {
                return 3;
            };
            if b.slot_id() == id || b.get_mut().unwrap()[0] != 0 {
                return 4;
            }
            0
        });
        assert_eq!(exit_code(wait_bounded(pid, Duration::from_secs(30))), Ok(0));
        // The parent's accounting never saw the child.
        let s = p.stats();
        assert_eq!((s.slots, s.slots_in_use, s.acquires), (1, 1, 1));
    }

    #[test]
    fn a_wait_in_slices_counts_one_wait_and_one_failure() {
        let p = FramePool::new(PoolConfig {
            max_slots: Some(1),
            ..PoolConfig::default()
        });
        let held = p.acquire(4096).unwrap();
        let slice = Duration::from_millis(5);
        assert!(p.acquire_slice(4096, slice, true).unwrap().is_none());
        assert!(p.acquire_slice(4096, slice, false).unwrap().is_none());
        assert!(p.acquire_slice(4096, slice, false).unwrap().is_none());
        let s = p.stats();
        assert_eq!((s.waits, s.exhausted), (1, 0));
        assert!(matches!(
            p.acquire_with(4096, Exhausted::Error),
            Err(Error::PoolExhausted { .. })
        ));
        assert_eq!(p.stats().exhausted, 1);
        let id = held.slot_id();
        drop(held);
        let got = p
            .acquire_slice(4096, slice, false)
            .unwrap()
            .expect("a free slot");
        assert_eq!(got.slot_id(), id);
        // A timeout beyond the clock's range waits (here: finds the slot) instead of panicking.
        drop(got);
        assert!(p
            .acquire_with(4096, Exhausted::Block(Some(Duration::MAX)))
            .is_ok());
    }
}
