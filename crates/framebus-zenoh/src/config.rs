//! Zenoh configurations: JSON5 text, a file, or Zenoh's defaults.
//!
//! Zenoh's own parser checks every key (an unknown one is an error naming it);
//! this module only says where the text came from, so an error reads
//! `invalid zenoh config (file /etc/x.json5): unknown field `mdoe`, ...`.

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

/// Open a session, naming the configuration in the error.
pub(crate) fn open(src: &ConfigSource) -> Result<zenoh::Session> {
    use zenoh::Wait;
    let cfg = src.load()?;
    zenoh::open(cfg)
        .wait()
        .map_err(|e| ZenohError::zenoh("opening the session", e))
}
