//! Helpers shared by the crate's unit tests (`writer::tests`,
//! `video::tests`): waits by condition with a deadline, never by sleeping
//! for a guessed time.

use crate::WaitError;
use std::time::{Duration, Instant};

/// The timeout of one bounded wait in the `*_timeout` tests.
pub(crate) const SLICE: Duration = Duration::from_millis(5);

/// Poll `cond` until it holds; fail after 10 s (a deadline, not a guess at timing).
pub(crate) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Retry `f` while it times out; fail on any other error. Returns how many
/// times it timed out.
pub(crate) fn until_done(
    what: &str,
    mut f: impl FnMut() -> std::result::Result<(), WaitError>,
) -> usize {
    let mut timeouts = 0;
    loop {
        match f() {
            Ok(()) => return timeouts,
            Err(e) if e.is_timeout() => timeouts += 1,
            Err(e) => panic!("{what}: {e}"),
        }
    }
}
