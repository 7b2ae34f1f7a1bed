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
//! * Bounded: `submit` blocks while `depth` (1..=[`MAX_DEPTH`]) jobs are queued
//!   for that fd.
//! * Every blocking call has a `*_timeout` twin that gives up after a timeout
//!   with [`WaitError::Timeout`] (handing a job's owner back) and changes
//!   nothing, so a caller can wait in slices (e.g. to check for Ctrl-C) and the
//!   result is as if it had waited once.
//! * Errors: the first failed write is stored; every later job for that fd is
//!   dropped unwritten (never half a frame after a failure) and every later
//!   `submit`/`sync` for that fd returns the error until `close(fd)`.
//! * The writer borrows fds; it never closes them. `close(fd)` flushes the queue
//!   and joins that fd's thread; new jobs for the fd are refused meanwhile.
//! * `splice` jobs go into anonymous pipes with `vmsplice` (no copy). The pipe
//!   then references the job's pages, so the job stays in an in-pipe list and is
//!   finished only when `FIONREAD` shows the reader consumed its last byte (or
//!   the pipe lost its reader). Safe for readers that copy (`read`), which is
//!   why it is opt-in; see docs/pipe.md.
//! * Statistics ([`PipeWriter::fd_stats`]) take only locks that are never held
//!   across a blocking call, so they answer at once while a submit or sync waits.
//!
//! This module holds the public API; `source` the job contract, `worker` the
//! thread. Depends on `framebus-core` (for the `Frame` source) and `sys`.

mod source;
#[cfg(test)]
mod tests;
mod worker;

pub use source::{LeaseSlice, Region, Source};

use crate::error::{PipeError, Result, WaitError};
use crate::sys;
use crate::wait::{deadline, untimed, untimed_err, wait_step};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use worker::{lock, FdState, FdWorker};

/// Most jobs that may wait per fd ([`WriterConfig::depth`], and the
/// VideoWriter's `queue_depth`).
pub const MAX_DEPTH: usize = 4096;
/// Smallest non-zero [`WriterConfig::chunk`] (bytes).
pub const MIN_CHUNK: usize = 4096;
/// Largest [`WriterConfig::chunk`] (bytes, 1 GiB).
pub const MAX_CHUNK: usize = 1 << 30;
/// Smallest non-zero [`WriterConfig::pipe_size`] (bytes; one page).
pub const MIN_PIPE_SIZE: usize = 4096;
/// Largest [`WriterConfig::pipe_size`] (bytes, 1 GiB).
pub const MAX_PIPE_SIZE: usize = 1 << 30;

/// How the writer writes.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Jobs that may wait per fd before `submit` blocks: 1..=[`MAX_DEPTH`].
    pub depth: usize,
    /// Bytes per `write` call: 0 = the whole contiguous job in one call, else
    /// [`MIN_CHUNK`]..=[`MAX_CHUNK`].
    pub chunk: usize,
    /// Grow pipes to this many bytes with `F_SETPIPE_SZ`: 0 = leave as is, else
    /// [`MIN_PIPE_SIZE`]..=[`MAX_PIPE_SIZE`] (the kernel may grant less).
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
            // 8 KiB writes, as turbopipe 2.1. `pipe_write` wakes a sleeping reader
            // only when a call that began on an empty pipe blocks or returns, so one
            // whole-frame `write` fills the 1 MiB pipe before FFmpeg reads and the
            // two copies take turns; 8 KiB writes let FFmpeg read between them, at
            // the cost of more wake-ups. Measured 2026-12-02 (docs/pipe.md, "Chunk
            // size and pipe size"): under load whole frames 0.75-0.88x turbopipe
            // into `ffmpeg -f null`, 8 KiB 0.99-1.11x; with a core to spare whole
            // frames 1.18-1.28x the 8 KiB default. Splice jobs are not chunked.
            chunk: 8192,
            pipe_size: sys::pipe_max_size().clamp(MIN_PIPE_SIZE, MAX_PIPE_SIZE),
            splice: false,
        }
    }
}

impl WriterConfig {
    /// Check every field against its documented range.
    pub fn validate(&self) -> Result<()> {
        check_depth("depth", self.depth)?;
        if self.chunk != 0 && !(MIN_CHUNK..=MAX_CHUNK).contains(&self.chunk) {
            return Err(PipeError::InvalidArgument {
                what: "chunk",
                value: self.chunk.to_string(),
                why: "must be 0 (whole jobs) or 4096..=1073741824 bytes",
            });
        }
        if self.pipe_size != 0 && !(MIN_PIPE_SIZE..=MAX_PIPE_SIZE).contains(&self.pipe_size) {
            return Err(PipeError::InvalidArgument {
                what: "pipe_size",
                value: self.pipe_size.to_string(),
                why: "must be 0 (leave as is) or 4096..=1073741824 bytes",
            });
        }
        Ok(())
    }
}

/// A queue depth must be 1..=[`MAX_DEPTH`].
pub(crate) fn check_depth(what: &'static str, depth: usize) -> Result<()> {
    if (1..=MAX_DEPTH).contains(&depth) {
        Ok(())
    } else {
        Err(PipeError::InvalidArgument {
            what,
            value: depth.to_string(),
            why: "must be 1..=4096",
        })
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
/// must release it in a particular context, e.g. under the GIL, can, or retry
/// it after a [`WaitError::Timeout`]).
pub struct Rejected<O, E = PipeError> {
    pub error: E,
    pub owner: O,
}

impl<O, E: std::fmt::Debug> std::fmt::Debug for Rejected<O, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rejected")
            .field("error", &self.error)
            .finish()
    }
}

impl<O> Rejected<O, WaitError> {
    /// The rejection of an unbounded call (which cannot time out).
    fn untimed(self) -> Rejected<O> {
        Rejected {
            error: untimed_err(self.error),
            owner: self.owner,
        }
    }
}

impl<O: Source> PipeWriter<O> {
    /// A writer with no fds yet. Workers start on the first job for an fd.
    /// Fails with [`PipeError::InvalidArgument`] if a field of `config` is out
    /// of its range (see [`WriterConfig`]).
    pub fn new(config: WriterConfig) -> Result<PipeWriter<O>> {
        config.validate()?;
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
        let w = Arc::new(FdWorker::new(fd, pipe_size));
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
        self.submit_until(fd, owner, key, splice, None)
            .map_err(Rejected::untimed)
    }

    /// [`PipeWriter::submit_with`] that waits for room at most `timeout`. On
    /// [`WaitError::Timeout`] nothing was queued and the owner is handed back:
    /// submitting it again continues as if one long wait had happened.
    pub fn submit_timeout(
        &self,
        fd: i32,
        owner: O,
        key: u64,
        splice: bool,
        timeout: Duration,
    ) -> std::result::Result<Ticket, Rejected<O, WaitError>> {
        self.submit_until(fd, owner, key, splice, deadline(timeout))
    }

    pub(crate) fn submit_until(
        &self,
        fd: i32,
        owner: O,
        key: u64,
        splice: bool,
        deadline: Option<Instant>,
    ) -> std::result::Result<Ticket, Rejected<O, WaitError>> {
        let w = match self.worker(fd) {
            Ok(w) => w,
            Err(e) => {
                return Err(Rejected {
                    error: e.into(),
                    owner,
                })
            }
        };
        let mut st = lock(&w.state);
        loop {
            if let Err(e) = st.take_error() {
                return Err(Rejected {
                    error: e.into(),
                    owner,
                });
            }
            if st.closing {
                return Err(Rejected {
                    error: PipeError::Closing(fd).into(),
                    owner,
                });
            }
            if st.queue.len() < self.shared.config.depth {
                break;
            }
            st.waiting += 1;
            let waited = wait_step(&w.progress, st, deadline);
            let timed_out = waited.is_err();
            st = waited.unwrap_or_else(|g| g);
            st.waiting -= 1;
            if timed_out {
                return Err(Rejected {
                    error: WaitError::Timeout,
                    owner,
                });
            }
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
        untimed(self.sync_fd_until(fd, None))
    }

    /// [`PipeWriter::sync_fd`] waiting at most `timeout`. A retry waits for
    /// what is queued at the time of the retry.
    pub fn sync_fd_timeout(&self, fd: i32, timeout: Duration) -> Result<(), WaitError> {
        self.sync_fd_until(fd, deadline(timeout))
    }

    pub(crate) fn sync_fd_until(
        &self,
        fd: i32,
        deadline: Option<Instant>,
    ) -> Result<(), WaitError> {
        match self.get(fd) {
            Some(w) => {
                let target = lock(&w.state).submitted;
                w.sync(target, deadline)
            }
            None => Ok(()),
        }
    }

    /// Wait until one job is finished.
    pub fn sync_ticket(&self, t: Ticket) -> Result<()> {
        untimed(self.sync_ticket_until(t, None))
    }

    /// [`PipeWriter::sync_ticket`] waiting at most `timeout`.
    pub fn sync_ticket_timeout(&self, t: Ticket, timeout: Duration) -> Result<(), WaitError> {
        self.sync_ticket_until(t, deadline(timeout))
    }

    fn sync_ticket_until(&self, t: Ticket, deadline: Option<Instant>) -> Result<(), WaitError> {
        match self.get(t.fd) {
            Some(w) => w.sync(t.seq + 1, deadline),
            None => Ok(()),
        }
    }

    /// Wait until every job submitted with `key` (on any fd) is finished; report
    /// the first write error of those fds.
    pub fn sync_key(&self, key: u64) -> Result<()> {
        untimed(self.sync_key_until(key, None))
    }

    /// [`PipeWriter::sync_key`] waiting at most `timeout` in all.
    pub fn sync_key_timeout(&self, key: u64, timeout: Duration) -> Result<(), WaitError> {
        self.sync_key_until(key, deadline(timeout))
    }

    fn sync_key_until(&self, key: u64, deadline: Option<Instant>) -> Result<(), WaitError> {
        self.sync_each_until(deadline, |st| st.last_of_key.get(&key).map(|&seq| seq + 1))
    }

    /// Wait for every fd; report the first write error found.
    pub fn sync_all(&self) -> Result<()> {
        untimed(self.sync_all_until(None))
    }

    /// [`PipeWriter::sync_all`] waiting at most `timeout` in all.
    pub fn sync_all_timeout(&self, timeout: Duration) -> Result<(), WaitError> {
        self.sync_all_until(deadline(timeout))
    }

    fn sync_all_until(&self, deadline: Option<Instant>) -> Result<(), WaitError> {
        self.sync_each_until(deadline, |st| Some(st.submitted))
    }

    /// Wait on every fd for the job count `target_of` reads from its state (None:
    /// nothing to wait for on that fd), in turn, up to `deadline` in all. A
    /// timeout stops at once; otherwise report the first write error found.
    fn sync_each_until(
        &self,
        deadline: Option<Instant>,
        target_of: impl Fn(&FdState<O>) -> Option<u64>,
    ) -> Result<(), WaitError> {
        let mut first_err = None;
        for w in self.workers() {
            let target = target_of(&lock(&w.state));
            if let Some(target) = target {
                match w.sync(target, deadline) {
                    Err(WaitError::Timeout) => return Err(WaitError::Timeout),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                    Ok(()) => {}
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Flush `fd`'s queue, stop its thread (joined) and forget the fd, so a
    /// later job for the same number starts afresh. The fd itself stays open.
    /// From the first call on, new jobs for the fd fail with
    /// [`PipeError::Closing`]. Returns the fd's write error if it was never
    /// reported.
    pub fn close(&self, fd: i32) -> Result<()> {
        untimed(self.close_until(fd, None))
    }

    /// [`PipeWriter::close`] waiting at most `timeout` for the queue to drain.
    /// On [`WaitError::Timeout`] the fd stays closing (new jobs are refused,
    /// queued ones are still written); call again to finish closing it.
    pub fn close_timeout(&self, fd: i32, timeout: Duration) -> Result<(), WaitError> {
        self.close_until(fd, deadline(timeout))
    }

    pub(crate) fn close_until(&self, fd: i32, deadline: Option<Instant>) -> Result<(), WaitError> {
        let Some(w) = self.get(fd) else {
            return Ok(());
        };
        let target = {
            let mut st = lock(&w.state);
            st.closing = true;
            st.submitted // cannot grow any more: submits now fail with Closing
        };
        w.work.notify_all();
        w.progress.notify_all(); // blocked submitters see `closing`
        drop(w.wait_done(target, deadline)?);
        // Everything is finished, so the worker is about to return: the join
        // below does not wait for the fd.
        {
            let mut fds = lock(&self.shared.fds);
            if fds.get(&fd).is_some_and(|cur| Arc::ptr_eq(cur, &w)) {
                fds.remove(&fd);
            }
        }
        let handle = lock(&w.thread).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                // The worker never panics by design; if it did, its jobs are lost.
                return Err(PipeError::Os {
                    op: "joining the writer thread",
                    source: std::io::Error::other("the writer thread panicked"),
                }
                .into());
            }
        }
        let mut st = lock(&w.state);
        if st.reported {
            return Ok(());
        }
        Ok(st.take_error()?)
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

    /// Statistics for `fd`, if it has a worker. Never waits for a blocked
    /// `submit`, `sync` or `close` (their locks are released while they wait).
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
            waiting: st.waiting,
            closing: st.closing,
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
    /// Submitters blocked waiting for room in the queue.
    pub waiting: usize,
    /// A `close` of the fd has begun (new jobs are refused).
    pub closing: bool,
}
