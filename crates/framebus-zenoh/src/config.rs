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

/// `cfg` with [`FRAME_TRANSPORT`] applied where it holds Zenoh's defaults.
pub fn with_frame_transport(mut cfg: zenoh::Config) -> Result<zenoh::Config> {
    for (key, zenoh_default, ours) in FRAME_TRANSPORT {
        if cfg.get_json(key).is_ok_and(|v| v == zenoh_default) {
            cfg.insert_json5(key, ours)
                .map_err(|e| ZenohError::InvalidConfig {
                    origin: format!(" (framebus's {key} = {ours})"),
                    why: clean(&e.to_string()),
                })?;
        }
    }
    Ok(cfg)
}

/// Open a session, naming the configuration in the error.
pub(crate) fn open(src: &ConfigSource) -> Result<zenoh::Session> {
    use zenoh::Wait;
    let cfg = with_frame_transport(src.load()?)?;
    zenoh::open(cfg)
        .wait()
        .map_err(|e| ZenohError::zenoh("opening the session", e))
}
