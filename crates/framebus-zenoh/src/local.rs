//! The same-host path: frames handed over through framebus's own channel.
//!
//! A publisher with `local` on also serves a framebus channel (memfds over a
//! Unix socket, `framebus-channel`) named [`channel_name`] and holds the
//! liveliness token [`token_key`], whose host part says where that channel
//! can be reached: this boot of the kernel, this network namespace (the
//! channel's socket is an abstract one), this time namespace (the channel's
//! timestamps are `CLOCK_MONOTONIC`, which a time namespace offsets) and this
//! user (the channel only admits its own uid). A subscriber with `local` on whose host part is the
//! same connects to that channel and withdraws its Zenoh subscription, so
//! the publisher's Zenoh `put` finds no subscriber on this host and the
//! pixels never cross the loopback; subscribers elsewhere, and plain Zenoh
//! subscribers on this host, still get every frame over Zenoh.

use std::os::unix::fs::MetadataExt;

/// Where a framebus channel is reachable and its timestamps mean the same:
/// `<boot id>.<netns inode>.<time ns inode>.<uid>`.
/// Any part that cannot be read becomes `x` (then two processes agree only
/// if the rest does, and a failed connect falls back to Zenoh anyway).
pub(crate) fn host_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().replace(|c: char| !c.is_ascii_alphanumeric(), ""))
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "x".into());
    let ns = |name: &str| {
        std::fs::metadata(format!("/proc/self/ns/{name}"))
            .map(|m| m.ino().to_string())
            .unwrap_or_else(|_| "x".into())
    };
    let (netns, timens) = (ns("net"), ns("time"));
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid().to_string())
        .unwrap_or_else(|_| "x".into());
    format!("{boot}.{netns}.{timens}.{uid}")
}

/// The framebus channel of the publisher whose Zenoh session id is `zid`.
pub(crate) fn channel_name(zid: &str) -> String {
    format!("zenoh-{zid}")
}

/// The liveliness token announcing a local channel for `key`.
pub(crate) fn token_key(host: &str, zid: &str, key: &str) -> String {
    format!("@framebus/local/{host}/{zid}/{key}")
}

/// The publisher's zid in a [`token_key`].
pub(crate) fn zid_of_token(token: &str) -> Option<&str> {
    token.split('/').nth(3)
}
