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

#[cfg(test)]
mod tests;
