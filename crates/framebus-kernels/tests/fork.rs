//! Kernels after `fork()`: a child forked after the parent ran threaded
//! kernels still converts with threads (fresh per-generation pools) and gets
//! the same bytes. The parent waits for it with a bounded `waitpid` loop and
//! kills it on timeout, so a hang fails the test instead of hanging it.
//!
//! Its own test binary: no other test thread may be inside the kernels' pool
//! cache when this one forks.

mod common;

use common::image;
use framebus_core::PixelFormat;
use framebus_kernels::{convert, ImageMut, ImageRef, Options};
use std::time::{Duration, Instant};

fn convert_rgb(src: &[u8], w: usize, h: usize, threads: Option<usize>) -> Vec<u8> {
    let sv = ImageRef::from_parts(src, w, h, PixelFormat::Bgra, None).unwrap();
    let mut out = vec![0u8; w * h * 3];
    let mut dv = ImageMut::from_parts(&mut out, w, h, PixelFormat::Rgb, None).unwrap();
    let opts = Options {
        threads,
        ..Options::default()
    };
    convert(&sv, &mut dv, &opts).unwrap();
    out
}

/// Wait for `pid` up to `timeout` (polling with `WNOHANG`); kill and reap it
/// at the deadline. Returns the exit code, or why there is none.
fn wait_bounded(pid: libc::pid_t, timeout: Duration) -> Result<i32, String> {
    let deadline = Instant::now() + timeout;
    let mut status = 0;
    loop {
        // SAFETY: `pid` is our own child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "waitpid: {}", std::io::Error::last_os_error());
        if Instant::now() >= deadline {
            // SAFETY: `pid` is our unreaped child, so its id was not reused.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(format!("child {pid} did not finish in {timeout:?}; killed"));
        }
        // Polling a child's exit: there is nothing to wait on but the clock.
        std::thread::sleep(Duration::from_millis(5));
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Err(format!("child {pid} ended with wait status {status}"))
    }
}

#[test]
fn forked_child_runs_threaded_kernels() {
    // Large enough to be cut into many bands (> PAR_MIN_BYTES).
    let (w, h) = (1024, 768);
    let src = image(w, h, 4, 7);
    let reference = convert_rgb(&src, w, h, Some(1));
    // The parent's threaded runs start the cached pools (all cores and 3).
    assert!(convert_rgb(&src, w, h, None) == reference);
    assert!(convert_rgb(&src, w, h, Some(3)) == reference);
    // SAFETY: the child only runs kernel code (whose pool cache no other
    // thread is using now: this is the binary's only test) and `_exit`s; it
    // never returns into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let ok = std::panic::catch_unwind(|| {
            convert_rgb(&src, w, h, None) == reference
                && convert_rgb(&src, w, h, Some(3)) == reference
                && convert_rgb(&src, w, h, Some(2)) == reference
        });
        let code = match ok {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(_) => 101,
        };
        // SAFETY: ends the forked child at once.
        unsafe { libc::_exit(code) };
    }
    assert_eq!(wait_bounded(pid, Duration::from_secs(30)), Ok(0));
    // The parent's pools still work.
    assert!(convert_rgb(&src, w, h, Some(3)) == reference);
}
