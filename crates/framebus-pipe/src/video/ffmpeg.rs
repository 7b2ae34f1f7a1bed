//! The FFmpeg process around a `VideoWriter`: finding the executable, draining
//! its stderr into a bounded tail on a thread (so FFmpeg never blocks on a full
//! stderr pipe), and waiting for its exit with a deadline.

use crate::error::{PipeError, Result, WaitError};
use crate::sys;
use crate::wait::wait_step;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes of FFmpeg's stderr kept for error messages.
pub const STDERR_TAIL: usize = 16 * 1024;

/// Find an executable: `explicit` if given (must exist), else `ffmpeg` on
/// `$PATH`. A bare name given explicitly is looked up on `$PATH` too.
pub fn find_ffmpeg(explicit: Option<&Path>) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exe = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if let Some(p) = explicit {
        if p.components().count() == 1 && !p.exists() {
            // A bare name: look it up on PATH below.
            return find_on_path(&p.to_string_lossy(), &is_exe);
        }
        return if is_exe(p) {
            Ok(p.to_path_buf())
        } else {
            Err(PipeError::FfmpegNotFound(format!(
                "{} is not an executable file",
                p.display()
            )))
        };
    }
    find_on_path("ffmpeg", &is_exe)
}

fn find_on_path(name: &str, is_exe: &dyn Fn(&Path) -> bool) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_exe(p))
        .ok_or_else(|| {
            PipeError::FfmpegNotFound(format!(
                "no {name:?} on PATH ({}); install FFmpeg or pass ffmpeg=\"/path/to/ffmpeg\"",
                path.to_string_lossy()
            ))
        })
}

/// What the stderr thread collected.
struct Tail {
    bytes: Vec<u8>,
    /// The thread saw EOF (the child and everything it started closed stderr).
    eof: bool,
}

/// Collects the tail of a child's stderr on a thread.
pub(super) struct StderrTail {
    shared: Arc<(Mutex<Tail>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl StderrTail {
    pub(super) fn start(mut stderr: std::process::ChildStderr) -> Result<StderrTail> {
        let shared = Arc::new((
            Mutex::new(Tail {
                bytes: Vec::with_capacity(STDERR_TAIL),
                eof: false,
            }),
            Condvar::new(),
        ));
        let sink = shared.clone();
        let thread = std::thread::Builder::new()
            .name("framebus-ffmpeg-stderr".into())
            .spawn(move || {
                let mut chunk = [0u8; 4096];
                loop {
                    match stderr.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            let mut t = sink.0.lock().unwrap_or_else(|p| p.into_inner());
                            t.bytes.extend_from_slice(&chunk[..n]);
                            if t.bytes.len() > 2 * STDERR_TAIL {
                                let cut = t.bytes.len() - STDERR_TAIL;
                                t.bytes.drain(..cut);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                sink.0.lock().unwrap_or_else(|p| p.into_inner()).eof = true;
                sink.1.notify_all();
            })
            .map_err(|source| PipeError::Os {
                op: "starting the stderr reader thread",
                source,
            })?;
        Ok(StderrTail {
            shared,
            thread: Some(thread),
        })
    }

    /// Wait (until `deadline`) for EOF — the child exited — and return the
    /// tail as text.
    pub(super) fn finish(&mut self, deadline: Option<Instant>) -> Result<String, WaitError> {
        let (m, cv) = &*self.shared;
        let mut t = m.lock().unwrap_or_else(|p| p.into_inner());
        while !t.eof {
            t = wait_step(cv, t, deadline).map_err(|_| WaitError::Timeout)?;
        }
        drop(t);
        if let Some(h) = self.thread.take() {
            let _ = h.join(); // it returns right after setting `eof`
        }
        Ok(self.tail())
    }

    pub(super) fn tail(&self) -> String {
        let t = self.shared.0.lock().unwrap_or_else(|p| p.into_inner());
        let start = t.bytes.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&t.bytes[start..])
            .trim_end()
            .to_string()
    }
}

/// Wait for `child` to exit until `deadline` and reap it: `Ok(None)` if it
/// still runs at the deadline.
pub(super) fn wait_child(
    child: &mut Child,
    deadline: Option<Instant>,
) -> std::io::Result<Option<ExitStatus>> {
    if let Some(s) = child.try_wait()? {
        return Ok(Some(s));
    }
    if deadline.is_none() {
        return child.wait().map(Some);
    }
    match sys::wait_exit(child.id(), deadline) {
        Ok(true) => child.wait().map(Some),
        Ok(false) => Ok(None),
        Err(_) => loop {
            // No pidfd (kernel < 5.3): poll.
            if let Some(s) = child.try_wait()? {
                return Ok(Some(s));
            }
            let now = Instant::now();
            match deadline {
                Some(d) if now >= d => return Ok(None),
                Some(d) => std::thread::sleep((d - now).min(Duration::from_millis(2))),
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        },
    }
}
