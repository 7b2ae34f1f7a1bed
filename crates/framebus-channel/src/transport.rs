//! The small trait both channel implementations share, so one generic test
//! suite (see `tests.rs`) checks the same semantics on each:
//!
//! * [`Shm`] — the cross-process channel ([`crate::Publisher`], [`crate::Subscriber`]);
//! * [`crate::local::Local`] — an in-process channel (threads only) with the same
//!   modes, back-pressure and pins, for tests and single-process pipelines.

use crate::{ChannelError, Publisher, PublisherConfig, Result, Subscriber};
use framebus_core::Frame;
use std::sync::{Condvar, MutexGuard};
use std::time::{Duration, Instant};

/// The sending end.
pub trait FrameSender: Send + Sync {
    /// Publish a frame with no copy; returns its channel sequence number.
    fn send(&self, frame: &Frame) -> Result<u64>;
    /// Subscribers receiving right now.
    fn subscriber_count(&self) -> usize;
    /// Calls to `send` blocked right now waiting for room in a full lossless
    /// queue (lets a test wait for "the sender is blocked" without a sleep).
    fn waiting_senders(&self) -> usize;
    /// Stop; subscribers drain what was sent, then get `Closed`.
    fn close(&self);
}

/// The receiving end.
pub trait FrameReceiver: Send {
    /// The next frame (read-only, pinned until dropped), waiting up to `timeout`.
    fn recv(&mut self, timeout: Option<Duration>) -> Result<Frame>;
    /// Latest mode: frames replaced before this receiver took them.
    fn skipped(&self) -> u64;
}

/// A way to connect senders and receivers by name.
pub trait Transport {
    type Tx: FrameSender;
    type Rx: FrameReceiver + 'static;
    fn publish(name: &str, cfg: PublisherConfig) -> Result<Self::Tx>;
    fn subscribe(name: &str, timeout: Duration) -> Result<Self::Rx>;
}

/// The shared-memory, cross-process implementation.
pub struct Shm;

impl Transport for Shm {
    type Tx = Publisher;
    type Rx = Subscriber;
    fn publish(name: &str, cfg: PublisherConfig) -> Result<Publisher> {
        Publisher::new(name, cfg)
    }
    fn subscribe(name: &str, timeout: Duration) -> Result<Subscriber> {
        Subscriber::connect(name, timeout)
    }
}

impl FrameSender for Publisher {
    fn send(&self, frame: &Frame) -> Result<u64> {
        Publisher::send(self, frame)
    }
    fn subscriber_count(&self) -> usize {
        self.subscribers()
    }
    fn waiting_senders(&self) -> usize {
        self.stats().waiting_senders
    }
    fn close(&self) {
        Publisher::close(self)
    }
}

impl FrameReceiver for Subscriber {
    fn recv(&mut self, timeout: Option<Duration>) -> Result<Frame> {
        Subscriber::recv(self, timeout)
    }
    fn skipped(&self) -> u64 {
        Subscriber::skipped(self)
    }
}

/// Shared by both implementations: the error for a missing channel.
pub(crate) fn not_found(name: &str, waited: Duration) -> ChannelError {
    ChannelError::NotFound {
        name: name.to_owned(),
        waited: waited.as_secs_f64(),
    }
}

/// Time left until `deadline` (`None`: no deadline, wait forever), or
/// [`ChannelError::Timeout`] naming `what` was awaited once it has passed.
pub(crate) fn time_left(
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    what: &'static str,
) -> Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ChannelError::Timeout(timeout.unwrap_or_default(), what));
            }
            Ok(Some(left))
        }
    }
}

/// Sleep on `cv` until notified or `left` passes (`None` = until notified).
/// Lock poisoning is ignored: the guarded state stays consistent under panics.
pub(crate) fn wait_on<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    left: Option<Duration>,
) -> MutexGuard<'a, T> {
    match left {
        None => cv.wait(guard).unwrap_or_else(|e| e.into_inner()),
        Some(left) => {
            cv.wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0
        }
    }
}
