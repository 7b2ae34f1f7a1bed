//! # framebus-zenoh: frames between machines over Eclipse Zenoh
//!
//! The same surface as the local channel (`framebus-channel`), on the Zenoh
//! protocol (peer/client/router, TCP, TLS, user/password auth), so plain
//! zenoh-python and zenoh-c programs can publish and read framebus frames
//! (wire format: [`wire`], docs/zenoh.md).
//!
//! ```text
//!  Publisher::send(&frame)                          Subscriber::recv()
//!   raw:  ZBytes over Bytes::from_owner(frame)  ──▶  Zenoh sample ──copy──▶ pool slot
//!         (the Lease pins the slot until Zenoh        (one copy out of Zenoh's
//!          drops the message: no copy here)            receive buffers)
//!   lz4/zstd/jpeg: encoder thread, parts in     ──▶  decoded into the slot
//!         parallel (rayon)                            (parts in parallel)
//!  liveliness token @framebus/pub/<key>/<zid>  ──▶  Closed(PublisherGone) when none left
//!  close(): query @framebus/delivered/<key>/*   ──▶  answered once every frame before it
//!         (the link is idle before the session         was taken ([`delivery`])
//!          closes: nothing cut mid-batch)
//! ```

pub mod config;
mod delivery;
pub mod error;
mod local;
pub mod publisher;
pub mod subscriber;
pub mod wire;

pub use config::ConfigSource;
pub use error::{CloseReason, Result, ZenohError};
pub use publisher::{Mode, Publisher, PublisherConfig, PublisherStats, CLOSE_DELIVERY_WAIT};
pub use subscriber::{Subscriber, SubscriberStats, LOSSLESS_DEPTH};
pub use wire::{Encoding, Meta};

/// Zenoh's levels, most to least verbose, as `init_log` takes them.
pub const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Print Zenoh's own log (its `tracing` events: links opening and closing,
/// leases, routing) to **stderr** at `level` and above — or as the
/// `RUST_LOG` environment variable says when it is set, as zenoh-python's
/// `init_log_from_env_or` does (which writes to stdout: a program whose
/// stdout is data would get log lines in it). Colours only on a terminal.
/// The first call in a process decides; later calls change nothing. An
/// unknown level is an error naming it.
pub fn init_log(level: &str) -> Result<()> {
    if !LOG_LEVELS.contains(&level) {
        return Err(ZenohError::InvalidArgument {
            what: "level",
            value: format!("{level:?}"),
            why: format!("one of {}", LOG_LEVELS.join(", ")),
        });
    }
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Err only when a subscriber is already installed: the first call decides.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_thread_names(true)
        .try_init();
    Ok(())
}

#[cfg(test)]
mod tests;
