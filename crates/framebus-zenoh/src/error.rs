//! The crate's one error type.

use std::time::Duration;

/// Why a channel end stopped delivering frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Every publisher of the key went away (closed, crashed, or its link
    /// dropped): its liveliness token disappeared. Recovers when one returns.
    PublisherGone,
    /// This end was closed by its owner.
    Closed,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseReason::PublisherGone => "publisher closed or gone",
            CloseReason::Closed => "closed",
        })
    }
}

/// Everything that can go wrong in framebus-zenoh.
#[derive(Debug, thiserror::Error)]
pub enum ZenohError {
    /// A key expression Zenoh refuses, or a wildcard where one key is needed.
    #[error("invalid key {key:?}: {why}")]
    InvalidKey { key: String, why: String },
    /// A Zenoh configuration that does not parse or names an unknown key.
    #[error("invalid zenoh config{origin}: {why}")]
    InvalidConfig { origin: String, why: String },
    /// An argument out of range (mode, encoding, quality, ...).
    #[error("invalid {what}={value} ({why})")]
    InvalidArgument {
        what: &'static str,
        value: String,
        why: String,
    },
    /// Zenoh failed (opening the session, declaring, putting).
    #[error("zenoh: {what}: {why}")]
    Zenoh { what: &'static str, why: String },
    /// The other end went away, or this end was closed.
    #[error("zenoh channel {key:?}: {reason}")]
    Closed { key: String, reason: CloseReason },
    /// A wait ran out.
    #[error("timed out after {secs:.3} s waiting for {1}", secs = .0.as_secs_f64())]
    Timeout(Duration, &'static str),
    /// `wait_for_subscribers` ran out with fewer than it waited for.
    #[error(
        "timed out after {secs:.3} s waiting for {wanted} subscribers ({have} now)",
        secs = .waited.as_secs_f64()
    )]
    Subscribers {
        waited: Duration,
        wanted: usize,
        have: usize,
    },
    /// A sample that is not a framebus frame (bad attachment, size, data).
    #[error("bad frame on {key:?}: {why}")]
    BadFrame { key: String, why: String },
    /// Encoding a frame, or putting it on the sender thread, failed (said by
    /// the next `send`).
    #[error("sending a frame as {encoding} failed: {why}")]
    Encode { encoding: &'static str, why: String },
    #[error(transparent)]
    Core(#[from] framebus_core::Error),
}

impl ZenohError {
    pub(crate) fn zenoh(what: &'static str, e: impl std::fmt::Display) -> Self {
        ZenohError::Zenoh {
            what,
            why: e.to_string(),
        }
    }

    /// True for the "keep waiting" answer of a slice of a wait.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ZenohError::Timeout(..) | ZenohError::Subscribers { .. }
        )
    }

    /// True for errors caused by a bad argument (Python: `ValueError`).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ZenohError::InvalidKey { .. }
                | ZenohError::InvalidConfig { .. }
                | ZenohError::InvalidArgument { .. }
        )
    }
}

pub type Result<T, E = ZenohError> = std::result::Result<T, E>;
