//! `DevicePool`: device buffers with the lease model of `FramePool`.
//!
//! A [`DeviceLease`] is an `Arc` claim on one `cuMemAlloc` buffer; the buffer
//! goes back to its pool when the last clone is dropped — but it is **reused
//! only once the work queued on it has completed**. Every user that queues
//! GPU work touching the buffer adds a [`Fence`] to the lease:
//!
//! * framebus's own work (an upload, a conversion kernel, a download) adds the
//!   event it recorded after that work;
//! * a DLPack consumer that named its stream (`__dlpack__(stream=s)`) gets, at
//!   the moment it releases the tensor, an event recorded on `s`: the work it
//!   queued on the tensor before releasing it is on `s` by then;
//! * a consumer that named no stream (`stream=-1`, or
//!   `__cuda_array_interface__`, which has no release hook) adds
//!   [`Fence::Context`]: before the buffer is reused the whole context is
//!   synchronised (`cuCtxSynchronize`) — conservative, and counted in
//!   `stats().context_syncs`.
//!
//! `acquire(len, stream)` prefers a free buffer whose fences have all completed
//! (most recently freed first, capacity within 2× of the request); then one
//! whose fences are all events, making `stream` wait for them on the device
//! (stream-ordered reuse, `stream_ordered_reuses`: no host wait, and memory
//! stays flat while the GPU runs behind the host); else it allocates; at the
//! limit it waits on the host for a fitting free buffer's fences (counted in
//! `fence_waits`; context fences synchronise the context), else evicts free
//! buffers that do not fit (after their fences), else blocks or fails like
//! `FramePool`. `trim()` frees the free buffers whose work has completed.

use crate::device::{Device, Event, StreamHandle};
use crate::driver::{check, CUdeviceptr};
use crate::error::{CudaError, Result};
use framebus_core::Exhausted;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Device buffers are allocated in multiples of this (2 MiB, the driver's
/// own large-page granularity).
pub const GRANULE: usize = 2 << 20;

/// What must complete before a returned buffer may be reused.
#[derive(Clone)]
pub enum Fence {
    /// This event.
    Event(Arc<Event>),
    /// Unknown work somewhere in the context: synchronise it.
    Context,
}

/// What one bounded acquire attempt found.
pub enum Attempt {
    Got(DeviceLease),
    /// A fitting buffer came back but the GPU still works on it.
    Busy,
    /// Every buffer is leased and the pool is at its limit.
    Full,
}

/// How a device pool is bounded.
#[derive(Clone, Copy, Debug)]
pub struct DevicePoolConfig {
    /// Upper bound on bytes allocated (free and in use). `None` = unbounded
    /// (the device's memory is the limit).
    pub max_bytes: Option<usize>,
    /// Policy at the limit (`Block` waits for a release, like `FramePool`).
    pub on_exhausted: Exhausted,
}

/// A snapshot of a device pool's accounting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevicePoolStats {
    pub device: usize,
    pub buffers: usize,
    pub buffers_in_use: usize,
    pub buffers_free: usize,
    /// Free buffers whose last work has not been seen complete yet.
    pub buffers_pending: usize,
    pub bytes_allocated: usize,
    pub bytes_in_use: usize,
    pub bytes_free: usize,
    pub high_water_bytes: usize,
    pub max_bytes: Option<usize>,
    pub acquires: u64,
    pub reuses: u64,
    pub allocs: u64,
    pub frees: u64,
    /// Acquires that waited on the host for the GPU to finish with a
    /// returned buffer (fences that are not events, or no stream given).
    pub fence_waits: u64,
    /// Reuses of a buffer the GPU still used, ordered on the device
    /// (`cuStreamWaitEvent` on the new work's stream).
    pub stream_ordered_reuses: u64,
    /// `cuCtxSynchronize` calls made for consumers that named no stream.
    pub context_syncs: u64,
    pub waits: u64,
    pub exhausted: u64,
    pub closed: bool,
}

struct FreeBuf {
    ptr: CUdeviceptr,
    capacity: usize,
    fences: Vec<Fence>,
}

#[derive(Default)]
struct State {
    free: Vec<FreeBuf>,
    in_use: usize,
    bytes_allocated: usize,
    bytes_in_use: usize,
    buffers: usize,
    stats: DevicePoolStats,
}

struct Shared {
    device: Arc<Device>,
    config: DevicePoolConfig,
    state: Mutex<State>,
    released: Condvar,
}

/// A bounded pool of device buffers on one device. Clones share one pool.
#[derive(Clone)]
pub struct DevicePool {
    shared: Arc<Shared>,
}

struct LeaseInner {
    ptr: CUdeviceptr,
    capacity: usize,
    fences: Mutex<Vec<Fence>>,
    pool: Arc<Shared>,
}

/// A claim on one device buffer; the last clone gives it back (see the module doc).
#[derive(Clone)]
pub struct DeviceLease(Arc<LeaseInner>);

impl std::fmt::Debug for DeviceLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceLease({:#x}, {} bytes)",
            self.0.ptr, self.0.capacity
        )
    }
}

impl DeviceLease {
    pub fn ptr(&self) -> CUdeviceptr {
        self.0.ptr
    }
    pub fn capacity(&self) -> usize {
        self.0.capacity
    }
    pub fn device(&self) -> &Arc<Device> {
        &self.0.pool.device
    }
    /// Holders of this lease (clones alive).
    pub fn holders(&self) -> usize {
        Arc::strong_count(&self.0)
    }
    /// Work that must complete before the buffer is reused.
    pub fn add_fence(&self, f: Fence) {
        let mut v = self.0.fences.lock().unwrap_or_else(|e| e.into_inner());
        // An event fence of the same event is kept once; a context fence once.
        let dup = v.iter().any(|g| match (g, &f) {
            (Fence::Context, Fence::Context) => true,
            (Fence::Event(a), Fence::Event(b)) => Arc::ptr_eq(a, b),
            _ => false,
        });
        if !dup {
            v.push(f);
        }
    }
    pub fn pool(&self) -> DevicePool {
        DevicePool {
            shared: self.0.pool.clone(),
        }
    }
}

impl Drop for LeaseInner {
    fn drop(&mut self) {
        let fences = std::mem::take(self.fences.get_mut().unwrap_or_else(|e| e.into_inner()));
        self.pool.give_back(FreeBuf {
            ptr: self.ptr,
            capacity: self.capacity,
            fences,
        });
    }
}

/// The fences' state: all complete (`Ok(true)`), some pending.
fn fences_done(fences: &[Fence]) -> bool {
    fences.iter().all(|f| match f {
        Fence::Event(e) => e.query().unwrap_or(false),
        Fence::Context => false,
    })
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn give_back(&self, b: FreeBuf) {
        let mut st = self.lock();
        st.in_use -= 1;
        st.bytes_in_use -= b.capacity;
        st.free.push(b);
        let closed = st.stats.closed;
        drop(st);
        if closed {
            self.trim_done();
        }
        self.released.notify_all();
    }

    /// Wait (polling, until `deadline`) for `fences`; `Ok(true)` when done.
    /// Context fences synchronise the context (counted).
    fn wait_fences(&self, fences: &[Fence], deadline: Option<Instant>) -> Result<bool> {
        for f in fences {
            match f {
                Fence::Event(e) => {
                    let left = deadline.map_or(Duration::from_secs(3600), |d| {
                        d.saturating_duration_since(Instant::now())
                    });
                    if !e.wait_for(left)? {
                        return Ok(false);
                    }
                }
                Fence::Context => {
                    self.device.synchronize()?;
                    self.lock().stats.context_syncs += 1;
                }
            }
        }
        Ok(true)
    }

    fn free_now(&self, bufs: Vec<FreeBuf>) {
        if bufs.is_empty() {
            return;
        }
        if let Ok(api) = self.device.bind() {
            for b in &bufs {
                // SAFETY: `ptr` came from cuMemAlloc in this context, no lease
                // refers to it and its fences completed.
                unsafe { (api.mem_free)(b.ptr) };
            }
        }
    }

    /// Free the free buffers whose fences completed; the bytes freed.
    fn trim_done(&self) -> usize {
        let mut st = self.lock();
        let (done, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut st.free)
            .into_iter()
            .partition(|b| fences_done(&b.fences));
        st.free = pending;
        let bytes: usize = done.iter().map(|b| b.capacity).sum();
        st.bytes_allocated -= bytes;
        st.buffers -= done.len();
        st.stats.frees += done.len() as u64;
        drop(st);
        self.free_now(done);
        bytes
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // No lease is left (each holds the pool): wait for the last work, free all.
        let free =
            std::mem::take(&mut self.state.get_mut().unwrap_or_else(|e| e.into_inner()).free);
        for b in &free {
            let _ = self.wait_fences(&b.fences, None);
        }
        self.free_now(free);
    }
}

impl DevicePool {
    pub fn new(device: Arc<Device>, config: DevicePoolConfig) -> DevicePool {
        let index = device.index;
        DevicePool {
            shared: Arc::new(Shared {
                device,
                config,
                state: Mutex::new(State {
                    stats: DevicePoolStats {
                        device: index,
                        ..Default::default()
                    },
                    ..Default::default()
                }),
                released: Condvar::new(),
            }),
        }
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.shared.device
    }

    pub fn config(&self) -> &DevicePoolConfig {
        &self.shared.config
    }

    pub fn same_pool(&self, other: &DevicePool) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// A buffer of at least `len` bytes under the pool's policy. A returned
    /// buffer the GPU still uses is waited for under either policy (that is
    /// deferred reuse, not exhaustion); `Error` fails only when every buffer is
    /// leased.
    pub fn acquire(&self, len: usize, stream: Option<StreamHandle>) -> Result<DeviceLease> {
        let start = Instant::now();
        let deadline = match self.shared.config.on_exhausted {
            Exhausted::Error | Exhausted::Block(None) => None,
            Exhausted::Block(Some(t)) => start.checked_add(t),
        };
        let mut first = true;
        loop {
            let slice = Duration::from_millis(100);
            let slice = deadline.map_or(slice, |d| {
                slice.min(d.saturating_duration_since(Instant::now()))
            });
            match self.acquire_slice(len, stream, slice, first)? {
                Attempt::Got(l) => return Ok(l),
                Attempt::Full if self.shared.config.on_exhausted == Exhausted::Error => {
                    return Err(self.exhausted(len))
                }
                _ if deadline.is_some_and(|d| Instant::now() >= d) => {
                    return Err(self.exhausted(len))
                }
                _ => first = false,
            }
        }
    }

    /// One bounded attempt (at most `slice` of waiting): a buffer, or why
    /// not yet — [`Attempt::Busy`] (a fitting buffer came back but the GPU
    /// still uses it) or [`Attempt::Full`] (every buffer is leased). The wait
    /// is counted only on the `first` slice. `stream`: the stream the buffer
    /// will be used on first — a returned buffer whose fences are events can
    /// then be reused at once, with `stream` made to wait for them on the
    /// device (stream-ordered reuse: no host wait, no new allocation).
    pub fn acquire_slice(
        &self,
        len: usize,
        stream: Option<StreamHandle>,
        slice: Duration,
        first: bool,
    ) -> Result<Attempt> {
        self.acquire_until(len, stream, Some(Instant::now() + slice), first)
    }

    /// The error for a request that found the pool at its limit.
    pub fn exhausted(&self, len: usize) -> CudaError {
        let mut st = self.shared.lock();
        st.stats.exhausted += 1;
        CudaError::PoolExhausted(format!(
            "cuda:{} pool at max_bytes={} with {} buffer(s) ({} bytes) in use, {} free pending; requested {len} bytes",
            self.shared.device.index,
            self.shared.config.max_bytes.map_or("None".into(), |m| m.to_string()),
            st.in_use,
            st.bytes_in_use,
            st.free.len(),
        ))
    }

    fn acquire_until(
        &self,
        len: usize,
        stream: Option<StreamHandle>,
        deadline: Option<Instant>,
        count_wait: bool,
    ) -> Result<Attempt> {
        if len == 0 {
            return Err(CudaError::invalid("size", 0, "must be at least 1 byte"));
        }
        let needed = len
            .checked_next_multiple_of(GRANULE)
            .ok_or_else(|| CudaError::invalid("size", len, "too large"))?;
        let sh = &self.shared;
        if let Some(m) = sh.config.max_bytes {
            if needed > m {
                return Err(CudaError::invalid(
                    "size",
                    len,
                    format!("larger than the device pool's max_bytes={m}"),
                ));
            }
        }
        let fits = |c: usize| c >= needed && c <= needed.saturating_mul(2);
        let mut waited = false;
        let mut st = sh.lock();
        loop {
            if st.stats.closed {
                return Err(CudaError::PoolClosed);
            }
            // 1. A fitting free buffer whose work is done, most recent first.
            if let Some(i) = st
                .free
                .iter()
                .rposition(|b| fits(b.capacity) && fences_done(&b.fences))
            {
                let b = st.free.remove(i);
                st.stats.reuses += 1;
                return Ok(Attempt::Got(self.lend(st, b.ptr, b.capacity)));
            }
            // 1b. Stream-ordered: a fitting free buffer fenced by events only;
            //     `stream` waits for them on the device.
            let orderable = |b: &FreeBuf| {
                fits(b.capacity) && b.fences.iter().all(|f| matches!(f, Fence::Event(_)))
            };
            if let (Some(s), Some(i)) = (stream, st.free.iter().rposition(orderable)) {
                let b = st.free.remove(i);
                drop(st);
                let waited: Result<()> = b.fences.iter().try_for_each(|f| match f {
                    Fence::Event(e) if !e.query()? => sh.device.stream_wait(s, e),
                    _ => Ok(()),
                });
                st = sh.lock();
                if let Err(e) = waited {
                    st.free.push(b);
                    return Err(e);
                }
                st.stats.reuses += 1;
                st.stats.stream_ordered_reuses += 1;
                return Ok(Attempt::Got(self.lend(st, b.ptr, b.capacity)));
            }
            // 2. Room for a new buffer.
            let room = |st: &State| {
                sh.config
                    .max_bytes
                    .is_none_or(|m| st.bytes_allocated + needed <= m)
            };
            if room(&st) {
                st.bytes_allocated += needed;
                st.buffers += 1;
                drop(st);
                let made = self.alloc(needed);
                st = sh.lock();
                match made {
                    Ok(ptr) => {
                        st.stats.allocs += 1;
                        return Ok(Attempt::Got(self.lend(st, ptr, needed)));
                    }
                    Err(e) => {
                        st.bytes_allocated -= needed;
                        st.buffers -= 1;
                        // Out of device memory: give back what is free here and retry once.
                        if e.is_out_of_memory() && !st.free.is_empty() {
                            drop(st);
                            let all: Vec<FreeBuf> = std::mem::take(&mut sh.lock().free);
                            self.release_all(all)?;
                            st = sh.lock();
                            continue;
                        }
                        return Err(e);
                    }
                }
            }
            // 3. A fitting free buffer still in use by the GPU: wait for it.
            if let Some(i) = st.free.iter().rposition(|b| fits(b.capacity)) {
                let b = st.free.remove(i);
                if count_wait {
                    st.stats.fence_waits += 1;
                }
                drop(st);
                match sh.wait_fences(&b.fences, deadline) {
                    Ok(true) => {
                        st = sh.lock();
                        st.stats.reuses += 1;
                        return Ok(Attempt::Got(self.lend(st, b.ptr, b.capacity)));
                    }
                    other => {
                        sh.lock().free.push(b);
                        other?;
                        return Ok(Attempt::Busy);
                    }
                }
            }
            // 4. Free buffers that do not fit: free them (after their work) for room.
            if !st.free.is_empty() {
                let all = std::mem::take(&mut st.free);
                drop(st);
                self.release_all(all)?;
                st = sh.lock();
                continue;
            }
            // 5. Everything is in use: wait for a release, or give up.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Attempt::Full);
            }
            if !waited {
                waited = true;
                if count_wait {
                    st.stats.waits += 1;
                }
            }
            st = match deadline {
                None => sh.released.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    sh.released
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Wait for the buffers' work and free them (accounting included).
    fn release_all(&self, bufs: Vec<FreeBuf>) -> Result<()> {
        let sh = &self.shared;
        for b in &bufs {
            sh.wait_fences(&b.fences, None)?;
        }
        let mut st = sh.lock();
        let bytes: usize = bufs.iter().map(|b| b.capacity).sum();
        st.bytes_allocated -= bytes;
        st.buffers -= bufs.len();
        st.stats.frees += bufs.len() as u64;
        drop(st);
        sh.free_now(bufs);
        Ok(())
    }

    fn alloc(&self, len: usize) -> Result<CUdeviceptr> {
        let api = self.shared.device.bind()?;
        let mut p: CUdeviceptr = 0;
        // SAFETY: out-pointer is a live local; the context is current.
        let r = unsafe { (api.mem_alloc)(&mut p, len) };
        check(api, "cuMemAlloc", r, || {
            let (free, total) = self.shared.device.mem_info().unwrap_or((0, 0));
            format!(
                "{len} bytes on cuda:{} ({free} of {total} bytes free)",
                self.shared.device.index
            )
        })?;
        Ok(p)
    }

    fn lend(
        &self,
        mut st: MutexGuard<'_, State>,
        ptr: CUdeviceptr,
        capacity: usize,
    ) -> DeviceLease {
        st.in_use += 1;
        st.bytes_in_use += capacity;
        st.stats.acquires += 1;
        st.stats.high_water_bytes = st.stats.high_water_bytes.max(st.bytes_in_use);
        drop(st);
        DeviceLease(Arc::new(LeaseInner {
            ptr,
            capacity,
            fences: Mutex::new(Vec::new()),
            pool: self.shared.clone(),
        }))
    }

    /// Free every free buffer whose work has completed; the bytes freed.
    pub fn trim(&self) -> usize {
        self.shared.trim_done()
    }

    /// Refuse new acquires; free what is free (buffers still in use are freed
    /// when returned, once their work has completed).
    pub fn close(&self) {
        self.shared.lock().stats.closed = true;
        self.shared.trim_done();
        self.shared.released.notify_all();
    }

    pub fn stats(&self) -> DevicePoolStats {
        let st = self.shared.lock();
        let mut s = st.stats.clone();
        s.buffers = st.buffers;
        s.buffers_in_use = st.in_use;
        s.buffers_free = st.free.len();
        s.buffers_pending = st.free.iter().filter(|b| !fences_done(&b.fences)).count();
        s.bytes_allocated = st.bytes_allocated;
        s.bytes_in_use = st.bytes_in_use;
        s.bytes_free = st.free.iter().map(|b| b.capacity).sum();
        s.max_bytes = self.shared.config.max_bytes;
        s
    }
}
