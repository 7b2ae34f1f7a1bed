//! Deadlines for the bounded waits: every blocking wait of the crate is a loop
//! of "check the condition, else wait on a condvar until the deadline", so the
//! `*_timeout` calls and the unbounded ones share one code path (`None` = no
//! deadline).

use crate::error::{PipeError, Result, WaitError};
use std::sync::{Condvar, MutexGuard};
use std::time::{Duration, Instant};

/// `now + timeout`, or `None` (no deadline) if that is beyond what `Instant`
/// can represent (e.g. `Duration::MAX`).
pub(crate) fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Wait once on `cv`: `Err(guard)` without waiting if `deadline` has passed
/// (the caller checked its condition under this lock just before, so it is
/// safe to report a timeout), else the guard after a wake-up or the deadline.
pub(crate) fn wait_step<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> std::result::Result<MutexGuard<'a, T>, MutexGuard<'a, T>> {
    match deadline {
        None => Ok(cv.wait(guard).unwrap_or_else(|p| p.into_inner())),
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return Err(guard);
            }
            Ok(cv
                .wait_timeout(guard, d - now)
                .unwrap_or_else(|p| p.into_inner())
                .0)
        }
    }
}

/// The result of a wait with no deadline, which cannot time out.
pub(crate) fn untimed<T>(r: std::result::Result<T, WaitError>) -> Result<T> {
    r.map_err(untimed_err)
}

/// See [`untimed`]; the `Timeout` arm is unreachable with no deadline and is
/// mapped to an error rather than a panic.
pub(crate) fn untimed_err(e: WaitError) -> PipeError {
    match e {
        WaitError::Failed(e) => e,
        WaitError::Timeout => PipeError::Os {
            op: "an unbounded wait",
            source: std::io::Error::from(std::io::ErrorKind::TimedOut),
        },
    }
}
