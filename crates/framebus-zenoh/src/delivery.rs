//! The delivery barrier a publisher's `close` waits on.
//!
//! Zenoh's `Session::close` cancels the link's TX task wherever it is — also
//! in the middle of writing a batch to the socket — and then writes the
//! batches still queued. On a busy link the subscriber then read a cut batch
//! followed by the next ones: the last frames of a stream were lost, or one
//! arrived with the right size and wrong pixels (its last fragment filled
//! from other batches). So `close` first makes sure nothing is in flight:
//!
//! every framebus subscriber answers queries on [`responder_key`]; the
//! publisher sends one query ([`wait_delivered`]) with its frames' priority
//! and congestion control, so it travels in the same queue and TCP stream
//! behind the last frame, and a subscriber's Zenoh thread sees it only after
//! it took every frame before it (a lossless subscriber whose queue is full
//! holds that thread, so the answer also waits for room). When every
//! subscriber has answered (or the timeout passed, or there is none), the
//! link is idle and closing cuts nothing. Plain Zenoh subscribers do not
//! answer and are not waited for.

use std::time::Duration;
use zenoh::qos::CongestionControl;
use zenoh::query::{ConsolidationMode, QueryTarget};
use zenoh::Wait;

/// The key a subscriber of `key` (wildcards allowed) with session id `zid` answers on.
pub(crate) fn responder_key(key: &str, zid: &str) -> String {
    format!("@framebus/delivered/{key}/{zid}")
}

/// Answer the barrier queries of publishers matching `key`, for the
/// session's lifetime. Replies name the publisher's key and this session.
pub(crate) fn declare_responder(session: &zenoh::Session, key: &str) -> zenoh::Result<()> {
    let zid = session.zid().to_string();
    session
        .declare_queryable(responder_key(key, &zid))
        .callback(move |q| {
            // The query is `@framebus/delivered/<publisher key>/*`: answer on
            // the publisher's key with this session's id in place of `*`.
            if let Some(prefix) = q.key_expr().as_str().strip_suffix("/*") {
                if let Ok(k) = zenoh::key_expr::KeyExpr::try_from(format!("{prefix}/{zid}")) {
                    let _ = q.reply(k, Vec::<u8>::new()).wait();
                }
            }
        })
        .background()
        .wait()
}

/// Wait until every framebus subscriber of the publisher's `key` has taken
/// all frames put before this call, for at most `timeout`. Frames must have
/// been put with Block congestion control (the query uses it too: a dropped
/// query would only cost the timeout).
pub(crate) fn wait_delivered(
    session: &zenoh::Session,
    key: &str,
    timeout: Duration,
) -> zenoh::Result<()> {
    let replies = session
        .get(responder_key(key, "*"))
        .target(QueryTarget::All)
        .consolidation(ConsolidationMode::None)
        .congestion_control(CongestionControl::Block)
        .timeout(timeout)
        .wait()?;
    // The channel ends when every queryable answered or the timeout passed.
    while replies.recv().is_ok() {}
    Ok(())
}
