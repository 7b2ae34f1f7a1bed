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
//!  subscribers() counts tokens                 ◀──  liveliness token @framebus/sub/<key>/<zid>
//!         ([`presence`])
//!  close(): query @framebus/delivered/<key>/*   ──▶  answered once every frame before it
//!         (the link is idle before the session         was taken ([`delivery`])
//!          closes: nothing cut mid-batch)
//! ```

pub mod config;
mod delivery;
pub mod error;
mod local;
mod presence;
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
/// `RUST_LOG` environment variable says when it is set (`target=level`
/// directives, e.g. `info,zenoh_transport=debug`), as zenoh-python's
/// `init_log_from_env_or` does (which writes to stdout: a program whose
/// stdout is data would get log lines in it). Colours only on a terminal.
/// The first call in a process decides; later calls change nothing. An
/// unknown level, or a `RUST_LOG` that does not parse, is an error naming it.
pub fn init_log(level: &str) -> Result<()> {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let bad = |what, value: &str, why: String| ZenohError::InvalidArgument {
        what,
        value: format!("{value:?}"),
        why,
    };
    let default = LOG_LEVELS
        .contains(&level)
        .then(|| level.parse::<LevelFilter>().ok())
        .flatten()
        .ok_or_else(|| bad("level", level, format!("one of {}", LOG_LEVELS.join(", "))))?;
    // `Targets`, not `EnvFilter`: the same `target=level` directives without
    // EnvFilter's regex engine (249 KiB more per wheel, measured: docs/zenoh.md).
    let targets = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => v
            .parse::<Targets>()
            .map_err(|e| bad("RUST_LOG", &v, format!("{e}: directives are target=level")))?,
        _ => Targets::new().with_default(default),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_thread_names(true);
    // Err only when a subscriber is already installed: the first call decides.
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(targets)
        .try_init();
    Ok(())
}

#[cfg(test)]
mod tests;
