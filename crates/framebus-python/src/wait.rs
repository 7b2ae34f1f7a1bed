//! The one interruptible wait behind every blocking call.
//!
//! A blocking call (a pool at its limit, connecting to a channel, waiting for
//! subscribers, a capture's next frame, a full pipe or FFmpeg queue, `sync`)
//! waits in slices of at most [`SLICE`] with the GIL released, and checks for
//! signals with the GIL held between slices, so Ctrl-C raises
//! `KeyboardInterrupt` within about 100 ms whatever the timeout — and
//! `timeout=None` really means "until it happens or Ctrl-C".
//!
//! The step given to [`wait`] does one bounded attempt and reports whether it
//! finished (`Break(value)`) or only ran out of its slice (`Continue(pending)`,
//! usually the crate's own "timed out" error); it is called again with the
//! time left, so a slice that ends early changes nothing. When the whole
//! timeout has run out, `expired` turns the last `pending` into the error.

use crate::errors::{Error, Result};
use pyo3::prelude::*;
use std::ops::ControlFlow;
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

/// `TimeoutError` for a wait on `what` that lasted `waited`.
pub fn timed_out(what: &str, waited: Duration) -> Error {
    Error::Timeout(format!(
        "timed out after {:.3} s waiting for {what}",
        waited.as_secs_f64()
    ))
}
