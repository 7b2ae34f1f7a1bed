//! Finding the live channels of this user without a daemon, and asking each
//! for its figures without subscribing (what `framebus ls` shows).
//!
//! * **Names** come from the kernel: every publisher listens on the abstract
//!   socket `"\0framebus/<uid>/<name>"`, and `/proc/net/unix` lists the
//!   listening sockets of this network namespace (abstract names start with
//!   `@`). A name vanishes when its publisher closes or dies, so the list is
//!   never stale and there is nothing to clean up.
//! * **Figures** come from the publisher itself: it also listens on
//!   `"\0framebus/<uid>/<name>/info"` ([`wire::info_address`]); a connection
//!   there gets one fixed-size [`wire::Info`] record (versioned, range-checked
//!   by [`wire::Info::decode`] like everything else from a peer) and is hung
//!   up. No control block, no pins, no slot fds: asking costs the publisher one
//!   accept and one `send` on its background thread, never its sending thread.
//!   The publisher's pid is the kernel's (`SO_PEERCRED`), not a claim.

use crate::wire::{self, Info, INFO_LEN};
use crate::{ChannelError, Mode, Result};
use framebus_core::PixelFormat;
use rustix::fd::AsFd;
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType};
use std::time::{Duration, Instant};

/// Listening-socket flag of `/proc/net/unix` (`__SO_ACCEPTCON`).
const ACCEPTCON: u32 = 0x10000;

/// What `framebus ls` shows for one channel.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelInfo {
    pub name: String,
    /// The publisher's process id (from the kernel, `SO_PEERCRED`).
    pub pid: u32,
    pub mode: Mode,
    /// Subscribers connected and receiving.
    pub subscribers: u32,
    /// The last frame sent: width, height, format (`None`: nothing sent yet).
    pub frame: Option<(u32, u32, PixelFormat)>,
    /// Sends per second, from the send times (0 when idle for over a second,
    /// or 3 periods).
    pub fps: f64,
    /// Frames sent so far.
    pub sent: u64,
    /// Latest mode: frames replaced before a subscriber took them.
    pub replaced: u64,
    /// Frames pinned by subscribers right now.
    pub pins: u64,
    /// Bytes mapped by the publisher's own pool.
    pub pool_bytes: u64,
    /// Time since the last send (`None`: never sent).
    pub since_last_send: Option<Duration>,
}

impl ChannelInfo {
    fn from_wire(name: &str, pid: u32, i: &Info) -> ChannelInfo {
        let mode = if i.mode == 2 {
            Mode::Lossless { depth: i.depth }
        } else {
            Mode::Latest
        };
        let frame = (i.format > 0)
            .then(|| PixelFormat::ALL.get(i.format as usize - 1))
            .flatten()
            .map(|f| (i.width, i.height, *f));
        let since = (i.since_last_ns != u64::MAX).then(|| Duration::from_nanos(i.since_last_ns));
        let fps = match since {
            Some(s) if i.period_ns > 0 => {
                let stale =
                    Duration::from_nanos(i.period_ns.saturating_mul(3)).max(Duration::from_secs(1));
                if s > stale {
                    0.0
                } else {
                    1e9 / i.period_ns as f64
                }
            }
            _ => 0.0,
        };
        ChannelInfo {
            name: name.to_owned(),
            pid,
            mode,
            subscribers: i.subscribers,
            frame,
            fps,
            sent: i.sent,
            replaced: i.replaced,
            pins: i.pins,
            pool_bytes: i.pool_bytes,
            since_last_send: since,
        }
    }
}

/// The names of this user's live channels, sorted (from `/proc/net/unix`).
pub fn channel_names() -> Result<Vec<String>> {
    let table = std::fs::read_to_string("/proc/net/unix").map_err(|e| ChannelError::Os {
        op: "read /proc/net/unix",
        source: e,
    })?;
    let uid = rustix::process::getuid().as_raw();
    Ok(names_in(&table, uid))
}

/// Parse `/proc/net/unix`: listening sockets named `@framebus/<uid>/<name>`
/// with a valid channel name (the info sockets, `<name>/info`, are not).
pub(crate) fn names_in(table: &str, uid: u32) -> Vec<String> {
    let prefix = format!("@framebus/{uid}/");
    let mut names: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode Path
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let name = f.get(7)?.strip_prefix(&prefix)?;
            (flags & ACCEPTCON != 0 && f.len() == 8 && wire::validate_name(name).is_ok())
                .then(|| name.to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Ask channel `name`'s publisher for its figures, waiting up to `timeout`
/// for the answer. [`ChannelError::NotFound`] when no publisher serves it
/// (or it is a framebus too old to have an info socket).
pub fn query(name: &str, timeout: Duration) -> Result<ChannelInfo> {
    let addr = wire::info_address(name)?;
    let start = Instant::now();
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| ChannelError::os("socket", e))?;
    match rustix::net::connect(&sock, &addr) {
        Ok(()) => {}
        Err(rustix::io::Errno::CONNREFUSED)
        | Err(rustix::io::Errno::NOENT)
        | Err(rustix::io::Errno::AGAIN) => {
            return Err(ChannelError::NotFound {
                name: name.to_owned(),
                waited: 0.0,
            })
        }
        Err(e) => return Err(ChannelError::os("connect", e)),
    }
    wire::check_peer_uid(sock.as_fd(), name)?;
    let pid = rustix::net::sockopt::socket_peercred(&sock)
        .map_err(|e| ChannelError::os("SO_PEERCRED", e))?
        .pid
        .as_raw_nonzero()
        .get() as u32;
    let deadline = start + timeout;
    let mut buf = [0u8; INFO_LEN + 1];
    loop {
        match rustix::net::recv(&sock, &mut buf, RecvFlags::DONTWAIT) {
            Ok((0, _)) => {
                return Err(ChannelError::Corrupt(format!(
                    "channel {name:?}: the publisher hung up without its info record"
                )))
            }
            Ok((n, _)) => {
                let info = Info::decode(&buf[..n])?;
                return Ok(ChannelInfo::from_wire(name, pid, &info));
            }
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ChannelError::Timeout(timeout, "a channel's info record"));
                }
                wire::wait_readable(&[sock.as_fd()], Some(left))?;
            }
            Err(e) => return Err(ChannelError::os("recv info", e)),
        }
    }
}

/// Every live channel of this user (by name) with its figures, or the error
/// of one that did not answer within `timeout` (or answered garbage).
pub fn list(timeout: Duration) -> Result<Vec<(String, Result<ChannelInfo>)>> {
    Ok(channel_names()?
        .into_iter()
        .map(|n| {
            let info = query(&n, timeout);
            (n, info)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Publisher, PublisherConfig};

    #[test]
    fn proc_net_unix_lines_are_parsed() {
        let t = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                 0000: 00000002 00000000 00010000 0005 01 11 @framebus/7/cam0\n\
                 0000: 00000002 00000000 00010000 0005 01 12 @framebus/7/cam0/info\n\
                 0000: 00000003 00000000 00000000 0005 03 13 @framebus/7/cam0\n\
                 0000: 00000002 00000000 00010000 0005 01 14 @framebus/8/other\n\
                 0000: 00000002 00000000 00010000 0005 01 15 @framebus/7/a b\n\
                 0000: 00000002 00000000 00010000 0001 01 16 /run/x.sock\n\
                 0000: 00000002 00000000 00010000 0005 01 17 @framebus/7/b.1\n";
        assert_eq!(names_in(t, 7), ["b.1", "cam0"]);
    }

    #[test]
    fn a_live_publisher_is_listed_and_answers_without_a_subscriber() {
        let name = format!("discover-{}", std::process::id());
        let p = Publisher::new(&name, PublisherConfig::default()).unwrap();
        assert!(channel_names().unwrap().contains(&name));
        let i = query(&name, Duration::from_secs(2)).unwrap();
        assert_eq!(i.pid, std::process::id());
        assert_eq!(
            (i.mode, i.subscribers, i.frame, i.sent),
            (Mode::Latest, 0, None, 0)
        );
        for _ in 0..3 {
            let f = p.acquire(64, 32, PixelFormat::Rgb).unwrap();
            p.send(&f).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        let i = query(&name, Duration::from_secs(2)).unwrap();
        assert_eq!(i.frame, Some((64, 32, PixelFormat::Rgb)));
        assert_eq!(i.sent, 3);
        assert!(i.fps > 10.0 && i.fps < 200.0, "{}", i.fps);
        assert!(i.pool_bytes >= 64 * 32 * 3);
        assert_eq!(p.subscribers(), 0, "asking does not subscribe");
        p.close();
        assert!(!channel_names().unwrap().contains(&name));
        assert!(matches!(
            query(&name, Duration::from_millis(100)),
            Err(ChannelError::NotFound { .. })
        ));
    }
}
