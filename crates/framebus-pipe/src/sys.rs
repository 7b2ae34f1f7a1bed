//! The system calls of the hot path, on raw fds and raw pointers: a complete
//! `write` (short writes, EINTR, EAGAIN on non-blocking fds), row-wise
//! `writev`/`vmsplice` for padded frames and spliced jobs, the pipe queries
//! that make vmsplice safe (pipefs check, `FIONREAD`, reader gone), enlarging
//! a pipe with `F_SETPIPE_SZ`, blocking signals in writer threads (so
//! SIGPIPE never kills the process), and waiting for a child's exit with a
//! deadline (`pidfd`).
//!
//! Pointers are passed straight to the kernel; no Rust slice is formed over
//! memory that another party (Python, the X server) might write concurrently.
//! Used by `writer`; `grow_pipe` and `pipe_max_size` are also public.

use crate::Region;
use std::io;

/// Outcome of writing one region: bytes written, and the error that stopped it.
pub(crate) type Progress = (usize, Option<io::Error>);

fn wait_writable(fd: i32) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is a valid pollfd on our stack, count 1.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A write-like call that moved nothing (`r <= 0`): `None` = retry (after
/// waiting for room on EAGAIN), `Some` = give up with this error.
fn failed(fd: i32, r: isize) -> Option<io::Error> {
    if r == 0 {
        return Some(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
    }
    retryable(fd).err()
}

/// Classify a failed write: `Ok(())` = retry, `Err` = give up.
fn retryable(fd: i32) -> io::Result<()> {
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINTR) => Ok(()),
        Some(libc::EAGAIN) => wait_writable(fd),
        _ => Err(e),
    }
}

/// Write `len` bytes from `ptr` in pieces of at most `chunk` bytes (0 = all at once).
///
/// # Safety
/// `ptr` must be valid for reads of `len` bytes for the whole call.
pub(crate) unsafe fn write_all(fd: i32, ptr: *const u8, len: usize, chunk: usize) -> Progress {
    let chunk = if chunk == 0 { usize::MAX } else { chunk };
    let mut done = 0usize;
    while done < len {
        // Linux writes at most 0x7ffff000 bytes per call anyway.
        let n = (len - done).min(chunk).min(0x7fff_f000);
        // SAFETY: `ptr + done .. ptr + done + n` lies within the caller's valid range.
        let r = unsafe { libc::write(fd, ptr.add(done).cast(), n) };
        if r > 0 {
            done += r as usize;
        } else if let Some(e) = failed(fd, r) {
            return (done, Some(e));
        }
    }
    (done, None)
}

/// How [`push_rows`] moves bytes into the fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `writev(2)`: the kernel copies the bytes into the pipe (or file).
    Writev,
    /// `vmsplice(2)` without SPLICE_F_GIFT: the pipe references the pages
    /// themselves; they must not change until the reader consumed them.
    Vmsplice,
}

/// Move the rows of a region (`row_bytes` of every `stride`; a flat region is
/// one row) into `fd` with `op`, up to IOV_MAX rows per call. `after(n)` runs
/// after every call that moved `n > 0` bytes. `iov` is the worker's own,
/// reused vector, so this allocates nothing once it has grown.
///
/// # Safety
/// Every row of `region` must be valid for reads for the whole call (and, for
/// `Op::Vmsplice`, stay unchanged until the reader consumed it).
pub(crate) unsafe fn push_rows(
    fd: i32,
    region: &Region,
    iov: &mut Vec<libc::iovec>,
    op: Op,
    after: &mut dyn FnMut(usize),
) -> Progress {
    const BATCH: usize = 1024; // IOV_MAX on Linux
    let total = region.byte_len_tight();
    let mut done = 0usize;
    let mut row = 0usize;
    let mut skip = 0usize; // bytes of `row` already moved
    while row < region.rows && done < total {
        iov.clear();
        let end = (row + BATCH).min(region.rows);
        for r in row..end {
            let off = if r == row { skip } else { 0 };
            iov.push(libc::iovec {
                // SAFETY: row `r` starts `r * stride` bytes into the region.
                iov_base: unsafe { region.ptr.add(r * region.stride + off) } as *mut _,
                iov_len: region.row_bytes - off,
            });
        }
        // SAFETY: every iovec points into the caller's valid rows; count ≤ IOV_MAX.
        let r = unsafe {
            match op {
                Op::Writev => libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int),
                Op::Vmsplice => libc::vmsplice(fd, iov.as_ptr(), iov.len(), 0),
            }
        };
        if r > 0 {
            let mut n = r as usize;
            done += n;
            after(n);
            // Advance (row, skip) by n bytes.
            while n > 0 {
                let left = region.row_bytes - skip;
                if n >= left {
                    n -= left;
                    row += 1;
                    skip = 0;
                } else {
                    skip += n;
                    n = 0;
                }
            }
        } else if let Some(e) = failed(fd, r) {
            return (done, Some(e));
        }
    }
    (done, None)
}

/// True if `fd` is an anonymous pipe (pipefs), as opposed to a named FIFO that a
/// new reader could open later, a file or a socket.
pub(crate) fn is_anonymous_pipe(fd: i32) -> bool {
    const PIPEFS_MAGIC: libc::c_long = 0x5049_5045;
    // SAFETY: `st` is a plain C struct filled by fstatfs; zeroed is a valid start.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes; fstatfs only inspects the fd.
    let r = unsafe { libc::fstatfs(fd, &mut st) };
    r == 0 && st.f_type as libc::c_long == PIPEFS_MAGIC
}

/// Bytes in the pipe not yet read (`FIONREAD`), or `None` if it cannot be told.
pub(crate) fn unread_bytes(fd: i32) -> Option<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer we pass.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    (r == 0 && n >= 0).then_some(n as u64)
}

/// True if the pipe has no reader any more (POLLERR on the write end): what is
/// left in it can never be read.
pub(crate) fn reader_gone(fd: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd on our stack, count 1, no wait.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    r > 0 && pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0
}

/// `/proc/sys/fs/pipe-max-size` (1 MiB by default), or 1 MiB if unreadable.
pub fn pipe_max_size() -> usize {
    std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

/// If `fd` is a pipe, grow its buffer to `want` bytes (never shrink it).
/// Returns the pipe's buffer size afterwards, or `None` if `fd` is not a pipe.
/// Failure to grow (EPERM over the per-user limit, EBUSY) is not an error.
pub fn grow_pipe(fd: i32, want: usize) -> Option<usize> {
    // SAFETY: F_GETPIPE_SZ takes no argument and only inspects the fd.
    let cur = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    if cur < 0 {
        return None; // not a pipe (or a bad fd: the first write will say so)
    }
    if want > cur as usize && want <= i32::MAX as usize {
        // SAFETY: F_SETPIPE_SZ takes an int size; it only changes the pipe's capacity.
        let r = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, want as libc::c_int) };
        if r > 0 {
            return Some(r as usize);
        }
    }
    Some(cur as usize)
}

/// Block every blockable signal in the calling thread: a write to a pipe whose
/// reader died then fails with EPIPE instead of raising SIGPIPE (which is
/// directed at the writing thread and would kill the process if not ignored),
/// and Ctrl-C keeps going to the main thread, where Python handles it.
pub(crate) fn block_signals_in_this_thread() {
    // SAFETY: `set` is initialised by sigfillset before use; pthread_sigmask only
    // changes the calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Wait until our child `pid` has exited (it is not reaped), or `deadline`
/// passes: `Ok(true)` = exited, `Ok(false)` = still running at the deadline.
/// Uses a pidfd (Linux ≥ 5.3); `Err` if that is unavailable, so the caller can
/// fall back to polling `try_wait`.
pub(crate) fn wait_exit(pid: u32, deadline: Option<std::time::Instant>) -> io::Result<bool> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes (pid_t, unsigned flags) and returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall just returned this fd; nobody else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(r as i32) };
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                // Round up so a wait never ends (and reports "running") early.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            }
        };
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd on our stack, count 1.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return Ok(true); // a pidfd polls readable once the process exited
        }
        if n == 0 && ms >= 0 {
            return Ok(false);
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}
