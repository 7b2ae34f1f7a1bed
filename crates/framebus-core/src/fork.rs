//! Fork detection: a process-wide generation number that changes in a child
//! created by `fork()`.
//!
//! A forked child inherits copies of everything a parent process holds: the
//! pool's free list and leases (whose `MAP_SHARED` memfd mappings the parent
//! keeps using), cached thread pools whose worker threads did not survive the
//! fork, and so on. Code that caches such state records [`generation`] next
//! to it and, when the number it reads later differs, knows it runs in a
//! child and must not use the inherited state.
//!
//! A `pthread_atfork` child handler, registered once on the first call to
//! [`generation`] (or [`register`]), increments the number in the child. A
//! fork that happens before the first call is not counted — nothing keyed by
//! the generation can exist yet, because obtaining the key registers the
//! handler. Reading the number is one atomic load (plus the `Once` fast-path
//! check, itself one atomic load).
//!
//! Used by `FramePool` (see `pool.rs`) and by framebus-kernels' cached thread
//! pools. Depends on libc only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static GENERATION: AtomicU64 = AtomicU64::new(0);
static REGISTER: Once = Once::new();

/// Runs in the child right after `fork()`, on the one thread the child has.
/// Only an atomic increment: async-signal-safe, as a fork handler must be.
extern "C" fn in_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Register the `pthread_atfork` child handler (once per process; later calls
/// are one atomic load). [`generation`] calls this itself.
pub fn register() {
    REGISTER.call_once(|| {
        // SAFETY: `in_child` is a plain `extern "C" fn()` with static lifetime
        // that only touches an atomic, which is all a fork child handler may
        // do; the prepare and parent handlers are absent. The handler stays
        // registered for the life of the process, which `Once` guarantees is
        // the only registration.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        // ENOMEM is the only documented failure; without the handler fork
        // detection is impossible, so fail loudly rather than corrupt frames.
        assert_eq!(rc, 0, "pthread_atfork failed with error {rc}");
    });
}

/// The fork generation of this process: 0 in a process that was not forked
/// (since the first call), and one more in a child than in its parent at the
/// time of the `fork()`.
///
/// Cheap: an atomic load once the handler is registered.
pub fn generation() -> u64 {
    register();
    GENERATION.load(Ordering::Relaxed)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for tests that really `fork()`.

    use std::time::{Duration, Instant};

    /// Wait for `pid` up to `timeout`, polling with `WNOHANG`; kill it (and
    /// reap it) when it is still running at the deadline. Returns the raw
    /// wait status, or `None` on timeout.
    pub(crate) fn wait_bounded(pid: libc::pid_t, timeout: Duration) -> Option<libc::c_int> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: `pid` is our own child; `status` is a valid out-pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                return Some(status);
            }
            assert!(
                r == 0,
                "waitpid({pid}) failed: {}",
                std::io::Error::last_os_error()
            );
            if Instant::now() >= deadline {
                // SAFETY: `pid` is our own unreaped child, so the id cannot
                // have been reused by another process.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                return None;
            }
            // Polling a child's exit: nothing to wait on but the clock.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Fork; in the child run `f` and `_exit` with its code (101 if it
    /// panicked), never returning into the test harness. Returns the pid.
    pub(crate) fn fork_child(f: impl FnOnce() -> i32) -> libc::pid_t {
        // SAFETY: fork has no memory-safety preconditions of its own; the
        // child below only runs `f` (code of the calling test, which avoids
        // locks other threads could hold) and then `_exit`s without running
        // the harness's code or atexit handlers.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: ends the child at once, as a forked child of a
            // multi-threaded process must.
            unsafe { libc::_exit(code) };
        }
        pid
    }

    /// The exit code of a wait status, or a description of how it ended.
    pub(crate) fn exit_code(status: Option<libc::c_int>) -> Result<i32, String> {
        match status {
            None => Err("timed out (killed)".into()),
            Some(s) if libc::WIFEXITED(s) => Ok(libc::WEXITSTATUS(s)),
            Some(s) if libc::WIFSIGNALED(s) => {
                Err(format!("killed by signal {}", libc::WTERMSIG(s)))
            }
            Some(s) => Err(format!("wait status {s}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use std::time::Duration;

    #[test]
    fn child_sees_a_new_generation_parent_keeps_its_own() {
        let before = generation();
        let pid = fork_child(|| if generation() == before + 1 { 0 } else { 1 });
        let st = wait_bounded(pid, Duration::from_secs(30));
        assert_eq!(exit_code(st), Ok(0), "child saw the wrong generation");
        assert_eq!(
            generation(),
            before,
            "the parent's generation must not change"
        );
    }
}
