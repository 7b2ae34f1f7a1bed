//! `PipeWriter`: one background thread per fd writes queued jobs in order.
//!
//! ```text
//!  submit(fd, owner, key) ──▶ [ bounded ring per fd ] ──▶ worker thread ──write()──▶ fd
//!        ▲ blocks when full                                   │ drops the owner, then
//!        └──────────── sync(fd / key / all) waits ◀───────────┘ marks the job done
//! ```
//!
//! * A job owns what keeps its bytes alive (a [`Source`]: a core `Frame` holds a
//!   `Lease`; the Python bindings hold a buffer export). The owner is dropped
//!   *before* the job counts as done, so when `sync` returns the slot is back in
//!   its pool and a Python export is released.
//! * Per fd, jobs are written in submission order by exactly one thread.
//! * Bounded: `submit` blocks while `depth` jobs are queued for that fd.
//! * Errors: the first failed write is stored; every later job for that fd is
//!   dropped unwritten (never half a frame after a failure) and every later
//!   `submit`/`sync` for that fd returns the error until `close(fd)`.
//! * The writer borrows fds; it never closes them. `close(fd)` flushes the queue
//!   and joins that fd's thread.
//! * `splice` jobs go into anonymous pipes with `vmsplice` (no copy). The pipe
//!   then references the job's pages, so the job stays in an in-pipe list and is
//!   finished only when `FIONREAD` shows the reader consumed its last byte (or
//!   the pipe lost its reader). Safe for readers that copy (`read`), which is
//!   why it is opt-in; see docs/pipe.md.
//!
//! Depends on `framebus-core` (for the `Frame` source) and `sys`.

use crate::error::{PipeError, Result, WriteFailure};
use crate::sys;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Where a job's bytes are: `rows` rows of `row_bytes`, `stride` bytes apart.
/// A flat buffer is one row.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub ptr: *const u8,
    pub row_bytes: usize,
    pub stride: usize,
    pub rows: usize,
}

impl Region {
    /// A contiguous buffer of `len` bytes.
    pub fn flat(ptr: *const u8, len: usize) -> Region {
        Region {
            ptr,
            row_bytes: len,
            stride: len,
            rows: 1,
        }
    }

    /// Bytes that reach the fd (rows without padding).
    pub fn byte_len_tight(&self) -> usize {
        self.row_bytes * self.rows
    }

    /// True when rows follow each other with no gap, so one `write` covers all.
    pub fn is_contiguous(&self) -> bool {
        self.rows <= 1 || self.stride == self.row_bytes
    }
}

/// Something that owns bytes to be written and keeps them alive while it lives.
///
/// # Safety
/// Implementors promise that every row described by [`Source::region`] stays
/// mapped and readable, at the same address, for as long as the value lives
/// (it is only read through the kernel, so concurrent writers make torn data at
/// worst, never undefined behaviour). `region` must return the same value on
/// every call.
pub unsafe trait Source: Send + 'static {
    /// The bytes to write.
    fn region(&self) -> Region;
}

// SAFETY: a Frame owns a Lease, which keeps the slot's mapping alive; the rows
// lie within `byte_len() <= capacity` (checked by Frame::new).
unsafe impl Source for framebus_core::Frame {
    /// Packed formats: `height` rows of `width × bpp` bytes (padding is skipped);
    /// planar YUV: the whole `byte_len()` as one block.
    fn region(&self) -> Region {
        let l = self.layout();
        if l.format.is_planar() {
            Region::flat(self.as_ptr(), self.byte_len())
        } else {
            Region {
                ptr: self.as_ptr(),
                row_bytes: l.row_bytes(),
                stride: l.stride,
                rows: l.height,
            }
        }
    }
}

/// A byte range of a lease.
#[derive(Clone, Debug)]
pub struct LeaseSlice {
    lease: framebus_core::Lease,
    offset: usize,
    len: usize,
}

impl LeaseSlice {
    /// `len` bytes at `offset` of `lease`; fails if the range leaves the slot.
    pub fn new(lease: framebus_core::Lease, offset: usize, len: usize) -> Result<LeaseSlice> {
        match offset.checked_add(len) {
            Some(end) if end <= lease.capacity() => Ok(LeaseSlice { lease, offset, len }),
            _ => Err(PipeError::InvalidArgument {
                what: "lease range",
                value: format!("{offset}+{len}"),
                why: "extends past the end of the slot",
            }),
        }
    }
}

// SAFETY: the Lease keeps the mapping alive; offset+len ≤ capacity (checked in new).
unsafe impl Source for LeaseSlice {
    fn region(&self) -> Region {
        // SAFETY: offset ≤ capacity, so the pointer stays within (or one past) the mapping.
        Region::flat(unsafe { self.lease.as_ptr().add(self.offset) }, self.len)
    }
}

// SAFETY: a Vec's heap buffer does not move while the Vec is alive and unmodified
// (the job owns it, nobody can modify it).
unsafe impl Source for Vec<u8> {
    fn region(&self) -> Region {
        Region::flat(self.as_ptr(), self.len())
    }
}

// SAFETY: the Arc keeps the allocation alive; shared slices are immutable.
unsafe impl Source for Arc<[u8]> {
    fn region(&self) -> Region {
        Region::flat(self.as_ptr(), self.len())
    }
}

// SAFETY: forwards to the boxed source, which upholds the contract.
unsafe impl Source for Box<dyn Source> {
    fn region(&self) -> Region {
        (**self).region()
    }
}

/// How the writer writes.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Jobs that may wait per fd before `submit` blocks (≥ 1).
    pub depth: usize,
    /// Bytes per `write` call (0 = the whole contiguous job in one call).
    pub chunk: usize,
    /// Grow pipes to this many bytes with `F_SETPIPE_SZ` (0 = leave as is).
    pub pipe_size: usize,
    /// Default for [`PipeWriter::submit`]: move jobs into anonymous pipes with
    /// `vmsplice` (no copy) instead of `write`. A spliced job is finished only
    /// once the reader consumed its bytes, so `sync` waits for the reader. Safe
    /// only if the reader copies the bytes out (`read`), as FFmpeg does; a reader
    /// that splices them onward would see later changes. See docs/pipe.md.
    pub splice: bool,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            depth: 8,
            chunk: 0,
            pipe_size: sys::pipe_max_size(),
            splice: false,
        }
    }
}

/// A queue ticket: the job's fd and its per-fd sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub fd: i32,
    pub seq: u64,
}

struct Job<O> {
    owner: O,
    key: u64,
    seq: u64,
    splice: bool,
}

/// How often an idle worker checks how far the reader got in the pipe.
const SPLICE_POLL: std::time::Duration = std::time::Duration::from_micros(250);

struct FdState<O> {
    queue: VecDeque<Job<O>>,
    /// Jobs submitted (the next job's seq).
    submitted: u64,
    /// Jobs finished (written or dropped after an error), in order.
    done: u64,
    /// For each key with unfinished jobs: the seq of its last job.
    last_of_key: HashMap<u64, u64>,
    error: Option<WriteFailure>,
    reported: bool,
    closing: bool,
    bytes_written: u64,
}

struct FdWorker<O> {
    fd: i32,
    state: Mutex<FdState<O>>,
    /// Signalled when a job is queued or the fd is closing (the worker waits).
    work: Condvar,
    /// Signalled when a job finishes (submitters and syncers wait).
    progress: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
    pipe_size: Option<usize>,
}

/// Recover from a poisoned mutex: our critical sections keep the state
/// consistent even if a panic unwound through one (none is expected).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<O: Source> FdWorker<O> {
    fn run(self: Arc<Self>, chunk: usize) {
        sys::block_signals_in_this_thread();
        // vmsplice is only used into anonymous pipes: a named FIFO could get a new
        // reader later that would see pages we already gave back.
        let anon_pipe = sys::is_anonymous_pipe(self.fd);
        // Reused for padded frames and vmsplice; grows once to IOV_MAX entries.
        let mut iov: Vec<libc::iovec> = Vec::new();
        // Jobs whose bytes are in the pipe but maybe not yet read, with the
        // stream offset of their last byte. Only used once a job was vmspliced.
        let mut in_pipe: VecDeque<(u64, Job<O>)> = VecDeque::new();
        // Every byte this worker put into the fd (written or spliced).
        let mut total_in: u64 = 0;
        loop {
            let next = {
                let mut st = lock(&self.state);
                loop {
                    if let Some(job) = st.queue.pop_front() {
                        break Some((job, st.error.is_some()));
                    }
                    if in_pipe.is_empty() {
                        if st.closing {
                            break None;
                        }
                        st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
                    } else {
                        // Idle with spliced pages in the pipe: release what the reader
                        // consumed, then nap until new work or the next check.
                        drop(st);
                        self.reap(&mut in_pipe, total_in);
                        st = lock(&self.state);
                        if !in_pipe.is_empty() && st.queue.is_empty() {
                            st = self
                                .work
                                .wait_timeout(st, SPLICE_POLL)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                    }
                }
            };
            let Some((job, failed)) = next else { return };
            // A slot freed in the ring: wake a blocked submitter.
            self.progress.notify_all();
            if failed {
                // Never written; earlier jobs must be finished first (order of `done`).
                while !in_pipe.is_empty() {
                    self.reap(&mut in_pipe, total_in);
                    if !in_pipe.is_empty() {
                        std::thread::sleep(SPLICE_POLL);
                    }
                }
                self.finish(job);
                continue;
            }
            let region = job.owner.region();
            let len = region.byte_len_tight();
            let splice = job.splice && anon_pipe;
            let (written, err) = if splice {
                let mut after = |n: usize| {
                    total_in += n as u64;
                    self.reap(&mut in_pipe, total_in);
                };
                // SAFETY: the job owns `owner`, whose Source contract keeps the rows
                // readable while it lives; it stays in `in_pipe` (alive, so its slot
                // or export cannot be reused) until the reader consumed every byte.
                unsafe { sys::push_rows(self.fd, &region, &mut iov, sys::Op::Vmsplice, &mut after) }
            } else if region.is_contiguous() {
                // SAFETY: the job owns `owner`, whose Source contract keeps the
                // region readable until it is dropped in `finish`.
                let r = unsafe { sys::write_all(self.fd, region.ptr, len, chunk) };
                total_in += r.0 as u64;
                r
            } else {
                // SAFETY: as above, for every row of the region.
                let r = unsafe {
                    sys::push_rows(self.fd, &region, &mut iov, sys::Op::Writev, &mut |_| {})
                };
                total_in += r.0 as u64;
                r
            };
            {
                let mut st = lock(&self.state);
                st.bytes_written += written as u64;
                if let Some(e) = err {
                    st.error = Some(WriteFailure {
                        fd: self.fd,
                        errno: e.raw_os_error().unwrap_or(libc::EIO),
                        job: job.seq,
                        written,
                        len,
                    });
                }
            }
            if splice || !in_pipe.is_empty() {
                in_pipe.push_back((total_in, job));
                self.reap(&mut in_pipe, total_in);
            } else {
                self.finish(job);
            }
        }
    }

    /// Finish the jobs at the front of `in_pipe` whose bytes the reader consumed
    /// (or all of them if the pipe has no reader left, so nothing can read them).
    fn reap(&self, in_pipe: &mut VecDeque<(u64, Job<O>)>, total_in: u64) {
        if in_pipe.is_empty() {
            return;
        }
        let consumed = if sys::reader_gone(self.fd) {
            u64::MAX
        } else {
            // Bytes others wrote into the same pipe only make this smaller (later
            // release, never earlier). If FIONREAD fails the fd was closed under
            // us (a caller bug, documented); nothing can be tracked any more.
            total_in.saturating_sub(sys::unread_bytes(self.fd).unwrap_or(0))
        };
        while in_pipe.front().is_some_and(|(end, _)| *end <= consumed) {
            if let Some((_, job)) = in_pipe.pop_front() {
                self.finish(job);
            }
        }
    }

    /// Drop the job's owner, then count it done (see the module doc).
    fn finish(&self, job: Job<O>) {
        let Job {
            owner, key, seq, ..
        } = job;
        drop(owner);
        let mut st = lock(&self.state);
        st.done = seq + 1;
        if st.last_of_key.get(&key) == Some(&seq) {
            st.last_of_key.remove(&key);
        }
        drop(st);
        self.progress.notify_all();
    }

    /// The stored error, marking it reported.
    fn take_error(st: &mut FdState<O>) -> Result<()> {
        match &st.error {
            Some(e) => {
                st.reported = true;
                Err(PipeError::Write(e.clone()))
            }
            None => Ok(()),
        }
    }

    fn wait_done(&self, target: u64) -> Result<()> {
        let mut st = lock(&self.state);
        while st.done < target {
            st = self.progress.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        Self::take_error(&mut st)
    }
}

struct Shared<O> {
    config: WriterConfig,
    fds: Mutex<HashMap<i32, Arc<FdWorker<O>>>>,
}

impl<O> Drop for Shared<O> {
    /// The last handle is gone: let every worker drain its queue and stop.
    fn drop(&mut self) {
        let fds = std::mem::take(self.fds.get_mut().unwrap_or_else(|p| p.into_inner()));
        for (_, w) in fds {
            lock(&w.state).closing = true;
            w.work.notify_all();
            if let Some(h) = lock(&w.thread).take() {
                let _ = h.join();
            }
        }
    }
}

/// Per-fd background writers. Clones share the same workers.
pub struct PipeWriter<O> {
    shared: Arc<Shared<O>>,
}

impl<O> Clone for PipeWriter<O> {
    fn clone(&self) -> Self {
        PipeWriter {
            shared: self.shared.clone(),
        }
    }
}

/// A job that could not be queued, with its owner handed back (so a caller that
/// must release it in a particular context, e.g. under the GIL, can).
pub struct Rejected<O> {
    pub error: PipeError,
    pub owner: O,
}

impl<O> std::fmt::Debug for Rejected<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rejected")
            .field("error", &self.error)
            .finish()
    }
}

impl<O: Source> PipeWriter<O> {
    /// A writer with no fds yet. Workers start on the first job for an fd.
    pub fn new(config: WriterConfig) -> Result<PipeWriter<O>> {
        if config.depth == 0 {
            return Err(PipeError::InvalidArgument {
                what: "queue depth",
                value: "0".into(),
                why: "must be at least 1",
            });
        }
        Ok(PipeWriter {
            shared: Arc::new(Shared {
                config,
                fds: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &WriterConfig {
        &self.shared.config
    }

    fn worker(&self, fd: i32) -> Result<Arc<FdWorker<O>>> {
        if fd < 0 {
            return Err(PipeError::InvalidArgument {
                what: "fd",
                value: fd.to_string(),
                why: "file descriptors are non-negative",
            });
        }
        let mut fds = lock(&self.shared.fds);
        if let Some(w) = fds.get(&fd) {
            return Ok(w.clone());
        }
        let cfg = &self.shared.config;
        let pipe_size = if cfg.pipe_size > 0 {
            sys::grow_pipe(fd, cfg.pipe_size)
        } else {
            None
        };
        let w = Arc::new(FdWorker {
            fd,
            state: Mutex::new(FdState {
                queue: VecDeque::with_capacity(cfg.depth),
                submitted: 0,
                done: 0,
                last_of_key: HashMap::with_capacity(cfg.depth * 2),
                error: None,
                reported: false,
                closing: false,
                bytes_written: 0,
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            thread: Mutex::new(None),
            pipe_size,
        });
        let run = w.clone();
        let chunk = cfg.chunk;
        let handle = std::thread::Builder::new()
            .name(format!("fbpipe-{fd}"))
            .spawn(move || run.run(chunk))
            .map_err(|source| PipeError::Spawn { fd, source })?;
        *lock(&w.thread) = Some(handle);
        fds.insert(fd, w.clone());
        Ok(w)
    }

    /// Queue `owner`'s bytes for `fd`, blocking while the fd's queue is full.
    /// `key` names the job for [`PipeWriter::sync_key`] (e.g. the exporting
    /// object's address). Fails — handing the owner back — with the fd's stored
    /// write error, so nothing is written after a failure.
    pub fn submit(&self, fd: i32, owner: O, key: u64) -> std::result::Result<Ticket, Rejected<O>> {
        self.submit_with(fd, owner, key, self.shared.config.splice)
    }

    /// [`PipeWriter::submit`], choosing `vmsplice` (`splice = true`, used only
    /// if `fd` is an anonymous pipe) or `write` for this job.
    pub fn submit_with(
        &self,
        fd: i32,
        owner: O,
        key: u64,
        splice: bool,
    ) -> std::result::Result<Ticket, Rejected<O>> {
        let w = match self.worker(fd) {
            Ok(w) => w,
            Err(error) => return Err(Rejected { error, owner }),
        };
        let mut st = lock(&w.state);
        loop {
            if let Err(error) = FdWorker::take_error(&mut st) {
                return Err(Rejected { error, owner });
            }
            if st.closing {
                return Err(Rejected {
                    error: PipeError::Closing(fd),
                    owner,
                });
            }
            if st.queue.len() < self.shared.config.depth {
                break;
            }
            st = w.progress.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        let seq = st.submitted;
        st.submitted += 1;
        st.last_of_key.insert(key, seq);
        st.queue.push_back(Job {
            owner,
            key,
            seq,
            splice,
        });
        drop(st);
        w.work.notify_one();
        Ok(Ticket { fd, seq })
    }

    fn workers(&self) -> Vec<Arc<FdWorker<O>>> {
        lock(&self.shared.fds).values().cloned().collect()
    }

    fn get(&self, fd: i32) -> Option<Arc<FdWorker<O>>> {
        lock(&self.shared.fds).get(&fd).cloned()
    }

    /// Wait until every job queued for `fd` so far is finished; then report the
    /// fd's write error, if any. An fd with no worker has nothing to wait for.
    pub fn sync_fd(&self, fd: i32) -> Result<()> {
        match self.get(fd) {
            Some(w) => {
                let target = lock(&w.state).submitted;
                w.wait_done(target)
            }
            None => Ok(()),
        }
    }

    /// Wait until one job is finished.
    pub fn sync_ticket(&self, t: Ticket) -> Result<()> {
        match self.get(t.fd) {
            Some(w) => w.wait_done(t.seq + 1),
            None => Ok(()),
        }
    }

    /// Wait until every job submitted with `key` (on any fd) is finished; report
    /// the first write error of those fds.
    pub fn sync_key(&self, key: u64) -> Result<()> {
        let mut first_err = None;
        for w in self.workers() {
            let target = lock(&w.state).last_of_key.get(&key).copied();
            if let Some(seq) = target {
                if let Err(e) = w.wait_done(seq + 1) {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Wait for every fd; report the first write error found.
    pub fn sync_all(&self) -> Result<()> {
        let mut first_err = None;
        for w in self.workers() {
            let target = lock(&w.state).submitted;
            if let Err(e) = w.wait_done(target) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Flush `fd`'s queue, stop its thread (joined) and forget the fd, so a
    /// later job for the same number starts afresh. The fd itself stays open.
    /// Returns the fd's write error if it was never reported.
    pub fn close(&self, fd: i32) -> Result<()> {
        let Some(w) = lock(&self.shared.fds).remove(&fd) else {
            return Ok(());
        };
        lock(&w.state).closing = true;
        w.work.notify_all();
        w.progress.notify_all();
        let handle = lock(&w.thread).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                // The worker never panics by design; if it did, its jobs are lost.
                return Err(PipeError::Os {
                    op: "joining the writer thread",
                    source: std::io::Error::other("the writer thread panicked"),
                });
            }
        }
        let mut st = lock(&w.state);
        if st.reported {
            return Ok(());
        }
        FdWorker::take_error(&mut st)
    }

    /// Close every fd (see [`PipeWriter::close`]); report the first error.
    pub fn close_all(&self) -> Result<()> {
        let fds: Vec<i32> = lock(&self.shared.fds).keys().copied().collect();
        let mut first_err = None;
        for fd in fds {
            if let Err(e) = self.close(fd) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Statistics for `fd`, if it has a worker.
    pub fn fd_stats(&self, fd: i32) -> Option<FdStats> {
        let w = self.get(fd)?;
        let st = lock(&w.state);
        Some(FdStats {
            submitted: st.submitted,
            done: st.done,
            queued: st.queue.len(),
            bytes_written: st.bytes_written,
            pipe_size: w.pipe_size,
            failed: st.error.is_some(),
        })
    }

    /// The fds that currently have a worker.
    pub fn fds(&self) -> Vec<i32> {
        let mut v: Vec<i32> = lock(&self.shared.fds).keys().copied().collect();
        v.sort_unstable();
        v
    }
}

/// Counters of one fd's worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdStats {
    pub submitted: u64,
    pub done: u64,
    pub queued: usize,
    pub bytes_written: u64,
    /// The pipe's buffer size after growing it, or `None` if the fd is not a pipe.
    pub pipe_size: Option<usize>,
    pub failed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use framebus_core::{FramePool, PixelFormat};
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two fds pipe2 writes.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(r, 0);
        // SAFETY: pipe2 just returned these fds; we own them exclusively.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn reader(rd: OwnedFd) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(rd);
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            v
        })
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Counts drops, to prove owners are released exactly once and before sync returns.
    struct Counted {
        bytes: Vec<u8>,
        drops: Arc<AtomicUsize>,
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }
    // SAFETY: the Vec's buffer lives and stays put as long as the Counted.
    unsafe impl Source for Counted {
        fn region(&self) -> Region {
            Region::flat(self.bytes.as_ptr(), self.bytes.len())
        }
    }

    #[test]
    fn bytes_arrive_exactly_and_in_order() {
        let (rd, wr) = pipe();
        let fd = wr.as_raw_fd();
        let r = reader(rd);
        let w: PipeWriter<Vec<u8>> = PipeWriter::new(WriterConfig {
            depth: 3,
            ..Default::default()
        })
        .unwrap();
        let mut expect = Vec::new();
        for (i, n) in [1usize, 4095, 4096, 65537, 1 << 20, 3 << 20, 7]
            .iter()
            .cycle()
            .take(40)
            .enumerate()
        {
            let v = pattern(*n, i as u8);
            expect.extend_from_slice(&v);
            w.submit(fd, v, i as u64).unwrap();
        }
        w.close(fd).unwrap();
        assert!(w.fds().is_empty());
        drop(wr);
        let got = r.join().unwrap();
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "bytes differ");
    }

    #[test]
    fn chunked_writes_give_the_same_bytes() {
        let (rd, wr) = pipe();
        let fd = wr.as_raw_fd();
        let r = reader(rd);
        let w: PipeWriter<Vec<u8>> = PipeWriter::new(WriterConfig {
            depth: 2,
            chunk: 100_000,
            pipe_size: 0,
            splice: false,
        })
        .unwrap();
        let v = pattern(1_234_567, 3);
        w.submit(fd, v.clone(), 0).unwrap();
        w.sync_fd(fd).unwrap();
        assert_eq!(w.fd_stats(fd).unwrap().bytes_written, v.len() as u64);
        w.close(fd).unwrap();
        drop(wr);
        assert!(r.join().unwrap() == v);
    }

    #[test]
    fn padded_frames_are_written_as_tight_rows() {
        let pool = FramePool::default();
        let (w_px, h) = (5usize, 700usize); // > 1024/2 rows: several writev batches
        let stride = 32;
        let mut f = pool
            .acquire_frame(w_px, h, PixelFormat::Rgb, Some(stride))
            .unwrap();
        let data = f.data_mut().unwrap();
        for (i, b) in data.iter_mut().enumerate() {
            *b = if i % stride < w_px * 3 {
                (i / stride) as u8 ^ (i % stride) as u8
            } else {
                0xEE
            };
        }
        let (rd, wr) = pipe();
        let fd = wr.as_raw_fd();
        let r = reader(rd);
        let w: PipeWriter<framebus_core::Frame> = PipeWriter::new(WriterConfig::default()).unwrap();
        w.submit(fd, f.clone(), 1).unwrap();
        w.close(fd).unwrap();
        drop(wr);
        let got = r.join().unwrap();
        assert_eq!(got.len(), w_px * 3 * h);
        for row in 0..h {
            for c in 0..w_px * 3 {
                assert_eq!(got[row * w_px * 3 + c], row as u8 ^ c as u8);
            }
        }
    }

    #[test]
    fn interleaved_fds_keep_their_own_order() {
        let pipes: Vec<_> = (0..3).map(|_| pipe()).collect();
        let w: PipeWriter<Vec<u8>> = PipeWriter::new(WriterConfig {
            depth: 2,
            ..Default::default()
        })
        .unwrap();
        let mut readers = Vec::new();
        let mut wrs = Vec::new();
        for (rd, wr) in pipes {
            readers.push(reader(rd));
            wrs.push(wr);
        }
        let mut expect = vec![Vec::new(); 3];
        for i in 0..60u32 {
            let k = (i * 7 % 3) as usize;
            let mut v = i.to_le_bytes().to_vec();
            v.extend(pattern(10_000 + i as usize * 977, i as u8));
            expect[k].extend_from_slice(&v);
            w.submit(wrs[k].as_raw_fd(), v, i as u64).unwrap();
        }
        w.sync_all().unwrap();
        assert_eq!(w.fds().len(), 3);
        w.close_all().unwrap();
        drop(wrs);
        for (r, e) in readers.into_iter().zip(expect) {
            assert!(r.join().unwrap() == e);
        }
    }

    #[test]
    fn owner_is_released_before_sync_returns_and_pool_slot_comes_back() {
        let pool = FramePool::default();
        let f = pool.acquire_frame(64, 64, PixelFormat::Bgra, None).unwrap();
        let (rd, wr) = pipe();
        let r = reader(rd);
        let w: PipeWriter<framebus_core::Frame> = PipeWriter::new(WriterConfig::default()).unwrap();
        w.submit(wr.as_raw_fd(), f.clone(), 42).unwrap();
        drop(f); // the job's clone keeps the slot leased
        w.sync_key(42).unwrap();
        let s = pool.stats();
        assert_eq!((s.slots_in_use, s.slots_free), (0, 1), "{s:?}");
        w.close(wr.as_raw_fd()).unwrap();
        drop(wr);
        assert_eq!(r.join().unwrap().len(), 64 * 64 * 4);
    }

    #[test]
    fn bounded_queue_blocks_the_submitter() {
        let (rd, wr) = pipe();
        let fd = wr.as_raw_fd();
        let w: PipeWriter<Vec<u8>> = PipeWriter::new(WriterConfig {
            depth: 2,
            chunk: 0,
            pipe_size: 0,
            splice: false,
        })
        .unwrap();
        // 64 KiB pipe, nobody reading: job 0 blocks in write, jobs 1-2 fill the queue.
        for i in 0..3 {
            w.submit(fd, vec![i; 1 << 20], 0).unwrap();
        }
        let w2 = w.clone();
        let blocked = std::thread::spawn(move || {
            w2.submit(fd, vec![9; 10], 0).unwrap();
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(!blocked.is_finished(), "a 4th job must wait for room");
        assert_eq!(w.fd_stats(fd).unwrap().queued, 2);
        let r = reader(rd);
        blocked.join().unwrap();
        w.close(fd).unwrap();
        drop(wr);
        assert_eq!(r.join().unwrap().len(), 3 * (1 << 20) + 10);
    }

    #[test]
    fn broken_pipe_is_reported_and_nothing_more_is_written() {
        let (rd, wr) = pipe();
        let fd = wr.as_raw_fd();
        let drops = Arc::new(AtomicUsize::new(0));
        let w: PipeWriter<Counted> = PipeWriter::new(WriterConfig {
            depth: 4,
            ..Default::default()
        })
        .unwrap();
        let job = |n| Counted {
            bytes: vec![1; n],
            drops: drops.clone(),
        };
        w.submit(fd, job(100), 0).unwrap();
        w.sync_fd(fd).unwrap();
        drop(rd); // the reader dies
                  // Either this submit or the sync sees EPIPE (a write happens in between).
        let mut err = None;
        let mut rejected = 0;
        for _ in 0..3 {
            if let Err(rj) = w.submit(fd, job(1 << 20), 0) {
                err = Some(rj.error);
                rejected += 1;
                break;
            }
        }
        let err = match err {
            Some(e) => e,
            None => w.sync_fd(fd).unwrap_err(),
        };
        assert_eq!(err.errno(), Some(libc::EPIPE), "{err}");
        assert!(err.to_string().contains("Broken pipe"), "{err}");
        // Sticky: later calls fail too and hand the owner back unwritten.
        let rj = w.submit(fd, job(10), 0).unwrap_err();
        assert_eq!(rj.error.errno(), Some(libc::EPIPE));
        drop(rj);
        rejected += 1;
        assert!(w.sync_all().is_err());
        let st = w.fd_stats(fd).unwrap();
        assert_eq!(st.done, st.submitted);
        assert_eq!(
            st.bytes_written, 100,
            "nothing after the failure reached the fd"
        );
        w.close(fd).unwrap(); // already reported
        assert_eq!(
            drops.load(Ordering::SeqCst),
            st.submitted as usize + rejected
        );
        drop(wr);
    }

    #[test]
    fn bad_fd_gives_ebadf_not_a_panic() {
        let w: PipeWriter<Vec<u8>> = PipeWriter::new(WriterConfig::default()).unwrap();
        let fd = 1_000_000 - 7; // above any fd this test process has open
        w.submit(fd, vec![0; 10], 0).unwrap();
        let e = w.sync_fd(fd).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EBADF), "{e}");
        let e = w.submit(-1, vec![0; 1], 0).unwrap_err().error;
        assert!(e.to_string().contains("invalid fd: -1"), "{e}");
        assert!(PipeWriter::<Vec<u8>>::new(WriterConfig {
            depth: 0,
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn full_disk_gives_enospc() {
        let Ok(f) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return; // no /dev/full in this sandbox
        };
        let w: PipeWriter<Vec<u8>> = PipeWriter::new(WriterConfig::default()).unwrap();
        w.submit(f.as_raw_fd(), vec![0; 4096], 0).unwrap();
        let e = w.close(f.as_raw_fd()).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOSPC), "{e}");
    }

    #[test]
    fn pipe_is_grown_to_the_configured_size() {
        let (_rd, wr) = pipe();
        let w: PipeWriter<Vec<u8>> = PipeWriter::new(WriterConfig {
            pipe_size: 1 << 20,
            ..Default::default()
        })
        .unwrap();
        w.submit(wr.as_raw_fd(), vec![0; 1], 0).unwrap();
        assert_eq!(w.fd_stats(wr.as_raw_fd()).unwrap().pipe_size, Some(1 << 20));
        w.close(wr.as_raw_fd()).unwrap();
    }

    #[test]
    fn lease_slice_range_is_checked() {
        let lease = framebus_core::Lease::detached(framebus_core::Slot::new(4096, false).unwrap());
        assert!(LeaseSlice::new(lease.clone(), 4000, 96).is_ok());
        let e = LeaseSlice::new(lease, 4000, 97).unwrap_err();
        assert!(e.to_string().contains("4000+97"), "{e}");
    }

    fn splice_writer<O: Source>() -> PipeWriter<O> {
        PipeWriter::new(WriterConfig {
            splice: true,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn spliced_bytes_arrive_exactly_flat_and_padded() {
        let (rd, wr) = pipe();
        let fd = wr.as_raw_fd();
        let r = reader(rd);
        let pool = FramePool::default();
        let w: PipeWriter<framebus_core::Frame> = splice_writer();
        let mut expect = Vec::new();
        for k in 0..20u8 {
            let (wpx, h, stride) = if k % 2 == 0 {
                (640, 480, None)
            } else {
                (33, 700, Some(128))
            };
            let mut f = pool
                .acquire_frame(wpx, h, PixelFormat::Rgb, stride)
                .unwrap();
            let st = f.stride();
            for (i, b) in f.data_mut().unwrap().iter_mut().enumerate() {
                *b = (i as u8) ^ k;
                if i % st < wpx * 3 {
                    expect.push(*b);
                }
            }
            w.submit(fd, f, k as u64).unwrap();
        }
        w.close(fd).unwrap();
        drop(wr);
        let got = r.join().unwrap();
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "spliced bytes differ");
        assert_eq!(
            pool.stats().slots_in_use,
            0,
            "every lease released after close"
        );
    }

    #[test]
    fn spliced_slot_is_not_reused_before_the_reader_read_it() {
        let (rd, wr) = pipe();
        let fd = wr.as_raw_fd();
        let pool = FramePool::default();
        let w: PipeWriter<framebus_core::Frame> = splice_writer();
        let mut f = pool
            .acquire_frame(256, 100, PixelFormat::Bgra, None)
            .unwrap(); // 100 KiB: fits the pipe
        f.data_mut().unwrap().fill(1);
        let slot = f.lease().slot_id();
        w.submit(fd, f, 7).unwrap();
        // The reader only starts reading after 300 ms; until then the pages sit
        // in the pipe by reference, so the slot must stay leased.
        let r = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let mut f = std::fs::File::from(rd);
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            v
        });
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            pool.stats().slots_in_use,
            1,
            "slot released while its pages sit unread in the pipe"
        );
        let t0 = std::time::Instant::now();
        w.sync_key(7).unwrap();
        assert!(
            t0.elapsed() >= Duration::from_millis(150),
            "sync returned before the reader read"
        );
        // Now the slot is free; reusing and overwriting it must not change what was read.
        let mut again = pool
            .acquire_frame(256, 100, PixelFormat::Bgra, None)
            .unwrap();
        assert_eq!(
            again.lease().slot_id(),
            slot,
            "the pool hands the same slot back"
        );
        again.data_mut().unwrap().fill(2);
        w.submit(fd, again, 8).unwrap();
        w.close(fd).unwrap();
        drop(wr);
        let got = r.join().unwrap();
        assert_eq!(got.len(), 2 * 256 * 100 * 4);
        assert!(
            got[..102_400].iter().all(|&b| b == 1),
            "first frame changed after release"
        );
        assert!(got[102_400..].iter().all(|&b| b == 2));
    }

    #[test]
    fn spliced_pages_are_released_when_the_reader_dies() {
        let (rd, wr) = pipe();
        let fd = wr.as_raw_fd();
        let drops = Arc::new(AtomicUsize::new(0));
        let w: PipeWriter<Counted> = splice_writer();
        w.submit(
            fd,
            Counted {
                bytes: vec![3; 10_000],
                drops: drops.clone(),
            },
            0,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(drops.load(Ordering::SeqCst), 0, "unread: still held");
        drop(rd); // nobody will ever read it
        w.sync_fd(fd).unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let rj = w.submit(
            fd,
            Counted {
                bytes: vec![3; 10],
                drops: drops.clone(),
            },
            0,
        );
        let e = match rj {
            Ok(_) => w.sync_fd(fd).unwrap_err(),
            Err(rj) => rj.error,
        };
        assert_eq!(e.errno(), Some(libc::EPIPE), "{e}");
        w.close(fd).ok();
    }

    #[test]
    fn only_anonymous_pipes_are_spliced_into() {
        let (rd, wr) = pipe();
        assert!(sys::is_anonymous_pipe(wr.as_raw_fd()));
        assert!(sys::is_anonymous_pipe(rd.as_raw_fd()));
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(!sys::is_anonymous_pipe(f.as_raw_fd()));
    }
}
