//! # framebus-channel
//!
//! Frames between processes with no copy: a [`Publisher`] sends any
//! [`framebus_core::Frame`] (every framebus slot is a memfd) and each
//! [`Subscriber`] receives a read-only [`framebus_core::Frame`] mapped from the
//! same pages.
//!
//! ```text
//!  publisher process                               subscriber process
//!  ─────────────────                               ──────────────────
//!  Frame ─lease clone─▶ pin table (per sub,        received Frame ─Lease─▶ SubHome
//!                       keyed by ticket)                                     │ last drop
//!        ── SEQPACKET socket (abstract name) ──▶  slot memfds (SCM_RIGHTS, once per slot)
//!        ◀─ RELEASE(ticket) ───────────────────   (sent when the received frame's last lease drops)
//!        ── control memfd (per subscriber) ────▶  descriptors: mailbox (latest) / ring (lossless)
//!        ── eventfd doorbell ──────────────────▶  wakes a blocked `recv`
//! ```
//!
//! * **Reuse by reference counts only.** While a subscriber holds a received
//!   frame, the publisher holds a [`framebus_core::Lease`] clone of the slot, so
//!   the slot cannot go back to its pool. The clone is dropped when the
//!   subscriber's release arrives, or when its socket hangs up (crash, `kill -9`).
//! * **Untrusted shared memory.** Everything read from the control block or the
//!   socket is validated ([`shm`], [`wire`]); garbage produces an error, never an
//!   out-of-bounds access or a hang.
//! * **Nothing in /dev/shm.** Rendezvous is an abstract Unix socket
//!   `"\0framebus/<uid>/<name>"`, freed by the kernel when its owner dies; the
//!   peer's uid is checked with `SO_PEERCRED` on both sides.
//!
//! Modules: [`wire`] (names, socket messages, the info record),
//! [`discover`] (the live channels and their figures, for `framebus ls`), [`shm`] (types placed in shared
//! memory), `publisher` (its API; `publisher::slot_table` maps slots to the
//! indexes subscribers cache fds under, `publisher::serve` is its background
//! thread), `subscriber`, [`transport`] (the trait both the shared-memory
//! channel and the in-process [`local`] one implement). This crate depends on
//! `framebus-core` only.

pub mod discover;
pub mod local;
mod publisher;
pub mod shm;
pub mod spin;
mod subscriber;
pub mod transport;
pub mod wire;

pub use publisher::{OnFull, Publisher, PublisherConfig, PublisherStats};
pub use spin::Spin;
pub use subscriber::{Subscriber, WaitStep};
pub use transport::{FrameReceiver, FrameSender, Shm, Transport};

use std::time::Duration;

/// Delivery semantics of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each subscriber gets the newest frame it has not seen; older ones are skipped.
    Latest,
    /// Each subscriber gets every frame, in order, through a queue of `depth` frames.
    Lossless { depth: u32 },
}

impl Mode {
    pub(crate) fn code(self) -> u32 {
        match self {
            Mode::Latest => 1,
            Mode::Lossless { .. } => 2,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = ChannelError> = std::result::Result<T, E>;

/// Everything that can go wrong in a channel. Each variant names the value at fault.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// A channel name outside the allowed charset or length.
    #[error("invalid channel name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    /// A bad argument (depth, timeout, …).
    #[error("invalid {what}: {value} ({why})")]
    InvalidArgument {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    /// Another live publisher already serves this name.
    #[error("channel {0:?} already has a live publisher")]
    NameInUse(String),
    /// No publisher serves this name.
    #[error("no publisher serves channel {name:?} (waited {waited:.3} s)")]
    NotFound { name: String, waited: f64 },
    /// The channel is closed for this end: the publisher closed it or died,
    /// or this end was closed itself. [`ClosedChannel::reason`] says which.
    #[error("channel {:?} is closed ({})", .0.name, .0.reason)]
    Closed(ClosedChannel),
    /// Nothing arrived in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    /// Lossless mode: a subscriber's queue is full.
    #[error("subscriber {subscriber} of channel {name:?} has {depth} frames queued (depth={depth}){waited}",
        waited = match .waited { Some(d) => format!("; waited {:.3} s", d.as_secs_f64()), None => String::new() })]
    Full {
        name: String,
        subscriber: u64,
        depth: u32,
        waited: Option<Duration>,
    },
    /// The peer runs as another user.
    #[error("peer of channel {name:?} runs as uid {got}, expected uid {expected}")]
    WrongUser {
        name: String,
        expected: u32,
        got: u32,
    },
    /// Garbage in the shared control block or on the socket.
    #[error("corrupt channel data: {0}")]
    Corrupt(String),
    /// Every entry of the slot table is pinned by a subscriber, and the table is
    /// at its hard limit ([`wire::MAX_SLOT_TABLE`]): subscribers hold that many
    /// distinct slots at once.
    #[error(
        "all {max} entries of the channel's slot table are pinned by subscribers \
         (release received frames)"
    )]
    TooManySlots { max: usize },
    /// A core error (pool, layout).
    #[error(transparent)]
    Core(#[from] framebus_core::Error),
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Os {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Why a channel end reports [`ChannelError::Closed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Seen by a subscriber: the publisher closed the channel, died, or cut
    /// this subscriber off. Frames queued before were delivered first.
    PublisherGone,
    /// This publisher was closed ([`Publisher::close`]) before the call.
    PublisherClosed,
    /// This subscriber was closed ([`Subscriber::close`]) before the call.
    SubscriberClosed,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseReason::PublisherGone => "publisher closed or gone",
            CloseReason::PublisherClosed => "publisher closed",
            CloseReason::SubscriberClosed => "subscriber closed",
        })
    }
}

/// The payload of [`ChannelError::Closed`]: which channel, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedChannel {
    pub name: String,
    pub reason: CloseReason,
}

impl ChannelError {
    /// [`ChannelError::Closed`] for channel `name`.
    pub fn closed(name: &str, reason: CloseReason) -> Self {
        ChannelError::Closed(ClosedChannel {
            name: name.to_owned(),
            reason,
        })
    }

    /// `Corrupt` with a formatted message. Cold and out of line, so the
    /// formatting code of the many checks on untrusted input does not sit
    /// between the instructions of the receive path (a cold receive is
    /// dominated by instruction-cache misses).
    #[cold]
    #[inline(never)]
    pub(crate) fn corrupt(msg: std::fmt::Arguments<'_>) -> Self {
        ChannelError::Corrupt(msg.to_string())
    }

    pub(crate) fn os(op: &'static str, e: rustix::io::Errno) -> Self {
        ChannelError::Os {
            op,
            source: e.into(),
        }
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
