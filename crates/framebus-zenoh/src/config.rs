//! Zenoh configurations: JSON5 text, a file, or Zenoh's defaults.
//!
//! Zenoh's own parser checks every key (an unknown one is an error naming it);
//! this module says where the text came from, so an error reads
//! `invalid zenoh config (file /etc/x.json5): unknown field `mdoe`, ...`,
//! and sizes the transport for frames ([`FRAME_TRANSPORT`]) where the
//! configuration leaves Zenoh's defaults.

use crate::error::{Result, ZenohError};
use std::path::PathBuf;

/// Where a session's configuration comes from.
#[derive(Debug, Clone, Default)]
pub enum ConfigSource {
    /// Zenoh's defaults: peer mode, multicast scouting, listening on every interface.
    #[default]
    Default,
    /// JSON5 text (JSON is JSON5), e.g. `{mode: "peer", listen: {endpoints: ["tcp/127.0.0.1:7447"]}}`.
    Json5(String),
    /// A JSON5 (or YAML) file.
    File(PathBuf),
}

impl ConfigSource {
    /// A string that starts with `{` is JSON5, anything else a path.
    pub fn from_text_or_path(s: &str) -> ConfigSource {
        if s.trim_start().starts_with('{') {
            ConfigSource::Json5(s.to_owned())
        } else {
            ConfigSource::File(PathBuf::from(s))
        }
    }

    /// The parsed configuration.
    pub fn load(&self) -> Result<zenoh::Config> {
        match self {
            ConfigSource::Default => Ok(zenoh::Config::default()),
            ConfigSource::Json5(text) => {
                zenoh::Config::from_json5(text).map_err(|e| ZenohError::InvalidConfig {
                    origin: String::new(),
                    why: clean(&e.to_string()),
                })
            }
            ConfigSource::File(p) => {
                if !p.is_file() {
                    return Err(ZenohError::InvalidConfig {
                        origin: format!(" (file {})", p.display()),
                        why: "no such file (a config given as text must start with '{')".into(),
                    });
                }
                zenoh::Config::from_file(p).map_err(|e| ZenohError::InvalidConfig {
                    origin: format!(" (file {})", p.display()),
                    why: clean(&e.to_string()),
                })
            }
        }
    }
}

/// Zenoh's errors end with a source location (` at zenoh-config/...`); keep the words.
fn clean(s: &str) -> String {
    s.trim().to_owned()
}

/// Transport settings for multi-megabyte frames, applied by [`open`] to each
/// key whose value is still Zenoh's default (`(key, Zenoh's default, framebus's)`;
/// a value the configuration sets is kept). Measured in docs/benchmarks.md
/// ("Zenoh"); why each, in docs/zenoh.md ("Big frames"):
///
/// * `tx/queue/size/data` 2 → 16 batches (Zenoh's maximum): a frame is cut
///   into 64 KiB batches on the sending thread; with 2 queued batches that
///   thread and Zenoh's TX thread wake each other once per batch (~130 times
///   per 1080p frame); 16 let the sender run a megabyte ahead.
/// * `rx/buffer_size` 64 KiB → 64 MiB: the pool of 64 KiB receive buffers of a
///   link. A reassembled frame holds its batches' buffers until the frame is
///   copied out; with one pooled buffer (Zenoh's default) every further batch
///   is a fresh zeroed allocation (`calloc` + page faults, a pass over the
///   frame). Cost: ~10 MB more resident memory per link (measured in
///   docs/zenoh.md), not the whole 64 MiB.
pub const FRAME_TRANSPORT: [(&str, &str, &str); 2] = [
    ("transport/link/tx/queue/size/data", "2", "16"),
    ("transport/link/rx/buffer_size", "65535", "67108864"),
];

/// The link lease (ms) and how long a blocked put waits for room before
/// Zenoh closes the transport (µs), with Zenoh's default for the latter.
pub const LEASE_MS: &str = "transport/link/tx/lease";
pub const WAIT_BEFORE_CLOSE_US: (&str, u64) = (
    "transport/link/tx/queue/congestion_control/block/wait_before_close",
    5_000_000,
);

/// `cfg` with [`FRAME_TRANSPORT`] applied where it holds Zenoh's defaults,
/// and a blocked put's wait kept below the lease ([`close_before_lease`]).
pub fn with_frame_transport(mut cfg: zenoh::Config) -> Result<zenoh::Config> {
    for (key, zenoh_default, ours) in FRAME_TRANSPORT {
        if cfg.get_json(key).is_ok_and(|v| v == zenoh_default) {
            set(&mut cfg, key, ours)?;
        }
    }
    close_before_lease(&mut cfg)?;
    Ok(cfg)
}

/// A configuration that shortens the lease below Zenoh's default
/// `wait_before_close` (5 s) and leaves that wait as it is gets the wait set
/// to half the lease. Why: a put blocked on a dead link keeps its transport
/// open until that wait ends, while its receiving side gives up at the lease
/// and Zenoh re-connects the endpoint; a connection that comes back in
/// between is *added to the old transport* (Zenoh adds outbound links to a
/// transport that still exists for that peer), whose sequence numbers the
/// peer's new transport does not know: the session looked re-connected
/// (liveliness tokens came back) while frames were lost — seen in ~1 of 30
/// runs of the long-outage test (docs/zenoh.md). With the wait below the
/// lease the blocked transport ends first and the re-connection opens a new
/// one. With Zenoh's defaults (10 s lease, 5 s wait) nothing changes.
fn close_before_lease(cfg: &mut zenoh::Config) -> Result<()> {
    let num = |cfg: &zenoh::Config, key: &str| {
        cfg.get_json(key)
            .ok()
            .and_then(|v| v.trim_matches('"').parse::<u64>().ok())
    };
    let (wait_key, wait_default) = WAIT_BEFORE_CLOSE_US;
    let (Some(lease_ms), Some(wait_us)) = (num(cfg, LEASE_MS), num(cfg, wait_key)) else {
        return Ok(());
    };
    if wait_us == wait_default && lease_ms.saturating_mul(1000) <= wait_us {
        let half = (lease_ms.saturating_mul(500)).max(1).to_string();
        set(cfg, wait_key, &half)?;
    }
    Ok(())
}

fn set(cfg: &mut zenoh::Config, key: &str, value: &str) -> Result<()> {
    cfg.insert_json5(key, value)
        .map_err(|e| ZenohError::InvalidConfig {
            origin: format!(" (framebus's {key} = {value})"),
            why: clean(&e.to_string()),
        })
}

/// Open a session, naming the configuration in the error.
pub(crate) fn open(src: &ConfigSource) -> Result<zenoh::Session> {
    use zenoh::Wait;
    let cfg = with_frame_transport(src.load()?)?;
    zenoh::open(cfg)
        .wait()
        .map_err(|e| ZenohError::zenoh("opening the session", e))
}
