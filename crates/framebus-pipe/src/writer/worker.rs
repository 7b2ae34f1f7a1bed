//! One fd's worker: its queue and counters ([`FdState`]), the thread that
//! writes the queued jobs in order, and the waits on its progress.
//!
//! The thread's loop takes the next job ([`FdWorker::next_job`]) and hands it
//! to exactly one path: [`FdWorker::write_job`] (`write`/`writev`, the kernel
//! copies), [`FdWorker::splice_job`] (`vmsplice`, the pipe references the
//! pages until the reader consumed them) or [`FdWorker::drop_unwritten`] (a
//! job queued after a failure). Locks are only held for bookkeeping, never
//! across a system call that can block, so statistics never wait for a stalled
//! reader.

use super::{Job, Source};
use crate::error::{PipeError, Result, WaitError, WriteFailure};
use crate::sys;
use crate::wait::wait_step;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

/// How often an idle worker checks how far the reader got in the pipe.
const SPLICE_POLL: std::time::Duration = std::time::Duration::from_micros(250);

/// Queue entries allocated up front (the queue grows on demand up to the
/// configured depth; never preallocate by a user-given count).
pub(super) const PREALLOC: usize = 16;

pub(super) struct FdState<O> {
    pub(super) queue: VecDeque<Job<O>>,
    /// Jobs submitted (the next job's seq).
    pub(super) submitted: u64,
    /// Jobs finished (written or dropped after an error), in order.
    pub(super) done: u64,
    /// For each key with unfinished jobs: the seq of its last job.
    pub(super) last_of_key: HashMap<u64, u64>,
    pub(super) error: Option<WriteFailure>,
    pub(super) reported: bool,
    pub(super) closing: bool,
    pub(super) bytes_written: u64,
    /// Submitters waiting for room in the queue.
    pub(super) waiting: usize,
}

impl<O> FdState<O> {
    pub(super) fn new() -> FdState<O> {
        FdState {
            queue: VecDeque::with_capacity(PREALLOC),
            submitted: 0,
            done: 0,
            last_of_key: HashMap::with_capacity(PREALLOC),
            error: None,
            reported: false,
            closing: false,
            bytes_written: 0,
            waiting: 0,
        }
    }

    /// The stored error, marking it reported.
    pub(super) fn take_error(&mut self) -> Result<()> {
        match &self.error {
            Some(e) => {
                self.reported = true;
                Err(PipeError::Write(e.clone()))
            }
            None => Ok(()),
        }
    }
}

pub(super) struct FdWorker<O> {
    pub(super) fd: i32,
    pub(super) state: Mutex<FdState<O>>,
    /// Signalled when a job is queued or the fd is closing (the worker waits).
    pub(super) work: Condvar,
    /// Signalled when a job finishes or leaves the queue (submitters and
    /// syncers wait).
    pub(super) progress: Condvar,
    pub(super) thread: Mutex<Option<JoinHandle<()>>>,
    pub(super) pipe_size: Option<usize>,
}

/// Recover from a poisoned mutex: our critical sections keep the state
/// consistent even if a panic unwound through one (none is expected).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The worker thread's own state: what it put into the fd and what of it may
/// still be unread.
struct Stream<O> {
    /// vmsplice is only used into anonymous pipes: a named FIFO could get a new
    /// reader later that would see pages we already gave back.
    anon_pipe: bool,
    /// Bytes per `write` call (0 = all at once).
    chunk: usize,
    /// Reused for padded frames and vmsplice; grows once to IOV_MAX entries.
    iov: Vec<libc::iovec>,
    /// Jobs whose bytes are in the pipe but maybe not yet read, with the stream
    /// offset of their last byte. Only used once a job was vmspliced.
    in_pipe: VecDeque<(u64, Job<O>)>,
    /// Every byte this worker put into the fd (written or spliced).
    total_in: u64,
}

impl<O: Source> FdWorker<O> {
    pub(super) fn new(fd: i32, pipe_size: Option<usize>) -> FdWorker<O> {
        FdWorker {
            fd,
            state: Mutex::new(FdState::new()),
            work: Condvar::new(),
            progress: Condvar::new(),
            thread: Mutex::new(None),
            pipe_size,
        }
    }

    /// The thread's body: every job goes down exactly one path, in order.
    pub(super) fn run(self: Arc<Self>, chunk: usize) {
        sys::block_signals_in_this_thread();
        let mut s = Stream {
            anon_pipe: sys::is_anonymous_pipe(self.fd),
            chunk,
            iov: Vec::new(),
            in_pipe: VecDeque::new(),
            total_in: 0,
        };
        while let Some((job, failed)) = self.next_job(&mut s) {
            // A slot freed in the queue: wake a blocked submitter.
            self.progress.notify_all();
            if failed {
                self.drop_unwritten(job, &mut s);
            } else if job.splice && s.anon_pipe {
                self.splice_job(job, &mut s);
            } else {
                self.write_job(job, &mut s);
            }
        }
    }

    /// The next queued job and whether the fd already failed; `None` once the
    /// fd is closing and nothing is queued or left in the pipe. While idle with
    /// spliced pages in the pipe, releases what the reader consumed.
    fn next_job(&self, s: &mut Stream<O>) -> Option<(Job<O>, bool)> {
        let mut st = lock(&self.state);
        loop {
            if let Some(job) = st.queue.pop_front() {
                return Some((job, st.error.is_some()));
            }
            if s.in_pipe.is_empty() {
                if st.closing {
                    return None;
                }
                st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
            } else {
                // Release what the reader consumed, then nap until new work or
                // the next check.
                drop(st);
                self.reap(s);
                st = lock(&self.state);
                if !s.in_pipe.is_empty() && st.queue.is_empty() {
                    st = self
                        .work
                        .wait_timeout(st, SPLICE_POLL)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    /// A job queued after the fd failed: never written. Earlier jobs still in
    /// the pipe are finished first (`done` advances in order).
    fn drop_unwritten(&self, job: Job<O>, s: &mut Stream<O>) {
        while !s.in_pipe.is_empty() {
            self.reap(s);
            if !s.in_pipe.is_empty() {
                std::thread::sleep(SPLICE_POLL);
            }
        }
        self.finish(job);
    }

    /// `vmsplice` the job's rows into the (anonymous) pipe. The job then waits
    /// in `in_pipe` until the reader consumed its last byte.
    fn splice_job(&self, job: Job<O>, s: &mut Stream<O>) {
        let region = job.owner.region();
        let Stream {
            iov,
            in_pipe,
            total_in,
            ..
        } = s;
        let mut after = |n: usize| {
            *total_in += n as u64;
            self.reap_in(in_pipe, *total_in);
        };
        // SAFETY: the job owns `owner`, whose Source contract keeps the rows
        // readable while it lives; it stays in `in_pipe` (alive, so its slot or
        // export cannot be reused) until the reader consumed every byte.
        let (written, err) =
            unsafe { sys::push_rows(self.fd, &region, iov, sys::Op::Vmsplice, &mut after) };
        self.record(&job, written, region.byte_len_tight(), err);
        s.in_pipe.push_back((s.total_in, job));
        self.reap(s);
    }

    /// `write` (contiguous) or `writev` (padded rows) the job: the kernel copies
    /// the bytes, so the job is finished at once, unless spliced jobs before it
    /// are still in the pipe (then it queues behind them, keeping `done` in order).
    fn write_job(&self, job: Job<O>, s: &mut Stream<O>) {
        let region = job.owner.region();
        let len = region.byte_len_tight();
        let (written, err) = if region.is_contiguous() {
            // SAFETY: the job owns `owner`, whose Source contract keeps the
            // region readable until it is dropped in `finish`.
            unsafe { sys::write_all(self.fd, region.ptr, len, s.chunk) }
        } else {
            // SAFETY: as above, for every row of the region.
            unsafe { sys::push_rows(self.fd, &region, &mut s.iov, sys::Op::Writev, &mut |_| {}) }
        };
        s.total_in += written as u64;
        self.record(&job, written, len, err);
        if s.in_pipe.is_empty() {
            self.finish(job);
        } else {
            s.in_pipe.push_back((s.total_in, job));
            self.reap(s);
        }
    }

    /// Count the bytes a job put into the fd and store its error, if any.
    fn record(&self, job: &Job<O>, written: usize, len: usize, err: Option<std::io::Error>) {
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

    fn reap(&self, s: &mut Stream<O>) {
        self.reap_in(&mut s.in_pipe, s.total_in);
    }

    /// Finish the jobs at the front of `in_pipe` whose bytes the reader consumed
    /// (or all of them if the pipe has no reader left, so nothing can read them).
    fn reap_in(&self, in_pipe: &mut VecDeque<(u64, Job<O>)>, total_in: u64) {
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

    /// Drop the job's owner, then count it done (see the module doc of `writer`).
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

    /// Wait until `target` jobs are finished or `deadline` passes; returns the
    /// locked state (the caller decides whether to report the stored error).
    pub(super) fn wait_done(
        &self,
        target: u64,
        deadline: Option<Instant>,
    ) -> std::result::Result<MutexGuard<'_, FdState<O>>, WaitError> {
        let mut st = lock(&self.state);
        while st.done < target {
            st = wait_step(&self.progress, st, deadline).map_err(|_| WaitError::Timeout)?;
        }
        Ok(st)
    }

    /// [`FdWorker::wait_done`], then report the fd's error (marking it reported).
    pub(super) fn sync(&self, target: u64, deadline: Option<Instant>) -> Result<(), WaitError> {
        let mut st = self.wait_done(target, deadline)?;
        Ok(st.take_error()?)
    }
}
