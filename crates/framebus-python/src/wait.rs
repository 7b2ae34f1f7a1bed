//! The one interruptible wait behind every blocking call.
//!
//! A blocking call (a pool at its limit, connecting to a channel, waiting for
//! subscribers, a capture's next frame, a full pipe or FFmpeg queue, `sync`)
//! waits in slices of at most [`SLICE`] with the GIL released, and checks for
//! signals with the GIL held between slices, so Ctrl-C raises
//! `KeyboardInterrupt` within about 100 ms whatever the timeout — and
//! `timeout=None` really means "until it happens or Ctrl-C".
//!
//! Work that cannot itself wait in slices (a long kernel, a CLI command) runs
//! on a helper thread while the caller waits for its result the same way
//! ([`join_watched`]); a signal handler's exception then decides whether to
//! keep waiting (the work was asked to stop) or to raise at once.
//!
//! The step given to [`wait`] does one bounded attempt and reports whether it
//! finished (`Break(value)`) or only ran out of its slice (`Continue(pending)`,
//! usually the crate's own "timed out" error); it is called again with the
//! time left, so a slice that ends early changes nothing. When the whole
//! timeout has run out, `expired` turns the last `pending` into the error.

use crate::errors::{Error, Result};
use pyo3::prelude::*;
use std::ops::ControlFlow;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest stretch spent waiting without looking for a signal.
pub const SLICE: Duration = Duration::from_millis(100);

/// Call `step(slice)` until it breaks with a value, the `timeout` runs out
/// (`None`: never), or a signal handler raises. `step` runs with the GIL
/// released. When time runs out, `expired(waited, last pending)` builds the
/// error to raise.
pub fn wait<T, P, E>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut step: impl FnMut(Duration) -> std::result::Result<ControlFlow<T, P>, E> + Send,
    expired: impl FnOnce(Duration, P) -> Error,
) -> Result<T>
where
    T: Send,
    P: Send,
    E: Send,
    Error: From<E>,
{
    let start = Instant::now();
    loop {
        let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
        let slice = left.map_or(SLICE, |l| l.min(SLICE));
        let pending = match py.detach(|| step(slice))? {
            ControlFlow::Break(v) => return Ok(v),
            ControlFlow::Continue(p) => p,
        };
        py.check_signals()?;
        if left.is_some_and(|l| l <= slice) || timeout.is_some_and(|t| start.elapsed() >= t) {
            return Err(expired(start.elapsed(), pending));
        }
    }
}

/// A slice-sized step's answer for [`wait`]: `Ok` breaks with the value, an
/// error `not_yet` accepts (the crate's "timed out" within a slice) means
/// "keep waiting", any other is raised.
pub fn pending<T, E>(
    r: std::result::Result<T, E>,
    not_yet: impl FnOnce(&E) -> bool,
) -> Result<ControlFlow<T, E>>
where
    Error: From<E>,
{
    match r {
        Ok(v) => Ok(ControlFlow::Break(v)),
        Err(e) if not_yet(&e) => Ok(ControlFlow::Continue(e)),
        Err(e) => Err(e.into()),
    }
}

/// `__next__` of a subscriber over its `recv(timeout=None)`: the frame, or
/// `StopIteration` once the channel (local or Zenoh) says it is closed.
pub fn next_frame(r: Result<framebus_core::Frame>) -> PyResult<crate::frame::PyFrame> {
    match r {
        Ok(f) => Ok(crate::frame::PyFrame::from_frame(f)),
        Err(Error::Channel(framebus_channel::ChannelError::Closed(_))) => {
            Err(pyo3::exceptions::PyStopIteration::new_err(()))
        }
        #[cfg(feature = "zenoh")]
        Err(Error::Zenoh(framebus_zenoh::ZenohError::Closed { .. })) => {
            Err(pyo3::exceptions::PyStopIteration::new_err(()))
        }
        Err(e) => Err(e.into()),
    }
}

/// `TimeoutError` for a wait on `what` that lasted `waited`.
pub fn timed_out(what: &str, waited: Duration) -> Error {
    Error::Timeout(format!(
        "timed out after {:.3} s waiting for {what}",
        waited.as_secs_f64()
    ))
}

/// What [`join_watched`] does after a signal handler raised.
pub enum OnSignal {
    /// Keep waiting for the result (the work was told to stop and will).
    KeepWaiting,
    /// Raise the handler's exception now.
    Raise,
}

/// Wait for the result a helper thread sends on `done`, in [`SLICE`]s with the
/// GIL released, running signal handlers between slices; a handler's
/// exception is passed to `on_signal` (which may, say, set a cancel flag) and
/// raised or not as it answers. `Ok(None)`: the thread ended without sending
/// (it panicked).
pub fn join_watched<T: Send>(
    py: Python<'_>,
    done: Receiver<T>,
    mut on_signal: impl FnMut(&PyErr) -> OnSignal,
) -> Result<Option<T>> {
    // A `Receiver` is not `Sync`; the lock lets the detached closure borrow it.
    let done = Mutex::new(done);
    loop {
        let got = py.detach(|| {
            done.lock()
                .unwrap_or_else(|p| p.into_inner())
                .recv_timeout(SLICE)
        });
        match got {
            Ok(v) => return Ok(Some(v)),
            Err(RecvTimeoutError::Disconnected) => return Ok(None),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if let Err(e) = py.check_signals() {
            if let OnSignal::Raise = on_signal(&e) {
                return Err(e.into());
            }
        }
    }
}

/// Run `work` on a helper thread and wait for it with [`join_watched`]: for
/// calls that may block long inside a library that cannot be interrupted
/// (opening a capture session: the ScreenCast portal waits for the user's
/// choice). Ctrl-C raises at once; the thread finishes on its own and its
/// result is dropped there (a late connection is closed, not leaked).
pub fn run_watched<T: Send + 'static>(
    py: Python<'_>,
    what: &str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("framebus {what}"))
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| Error::Py(pyo3::exceptions::PyOSError::new_err(format!("{what}: {e}"))))?;
    match join_watched(py, rx, |_| OnSignal::Raise)? {
        Some(result) => result,
        None => Err(Error::Py(pyo3::exceptions::PyRuntimeError::new_err(
            format!("{what}: the helper thread panicked"),
        ))),
    }
}
