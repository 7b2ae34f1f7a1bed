//! How many framebus subscribers a publisher has.
//!
//! Zenoh's matching status says whether *any* subscriber matches a key, not
//! how many. So every framebus subscriber also holds a liveliness token
//! [`token_key`]`(its key, its session id)` — declared after its data
//! subscription, so a publisher that sees the token has its declaration too
//! (one session's declarations travel in order) — and a publisher watches
//! the tokens whose key intersects its own (a subscriber of `cams/*` counts
//! for `cams/0`). A subscriber that reads through the local channel keeps
//! its token, so it still counts; plain Zenoh subscribers hold no token and
//! are not counted (the publisher then reports 1 if Zenoh knows of any).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use zenoh::sample::SampleKind;
use zenoh::Wait;

/// The token of a framebus subscriber of `key` (wildcards allowed) whose
/// session id is `zid`; `zid` = `*` is the pattern a publisher watches.
pub(crate) fn token_key(key: &str, zid: &str) -> String {
    format!("@framebus/sub/{key}/{zid}")
}

/// Announce a framebus subscriber of `key` for as long as the token lives.
pub(crate) fn declare_token(
    session: &zenoh::Session,
    key: &str,
) -> zenoh::Result<zenoh::liveliness::LivelinessToken> {
    session
        .liveliness()
        .declare_token(token_key(key, &session.zid().to_string()))
        .wait()
}

/// The framebus subscribers of a publisher's key alive now, by session id.
#[derive(Clone, Default)]
pub(crate) struct Subscribers(Arc<Mutex<HashSet<String>>>);

impl Subscribers {
    /// Watch the tokens of subscribers matching `key` for the session's
    /// lifetime (tokens already declared included).
    pub(crate) fn watch(session: &zenoh::Session, key: &str) -> zenoh::Result<Subscribers> {
        let seen = Subscribers::default();
        let set = seen.0.clone();
        session
            .liveliness()
            .declare_subscriber(token_key(key, "*"))
            .history(true)
            .callback(move |s| {
                // The token's last segment is the subscriber's session id.
                let Some(zid) = s.key_expr().as_str().rsplit('/').next() else {
                    return;
                };
                let mut set = set.lock().unwrap_or_else(|e| e.into_inner());
                match s.kind() {
                    SampleKind::Put => set.insert(zid.to_owned()),
                    SampleKind::Delete => set.remove(zid),
                };
            })
            .background()
            .wait()?;
        Ok(seen)
    }

    /// How many are alive now.
    pub(crate) fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
