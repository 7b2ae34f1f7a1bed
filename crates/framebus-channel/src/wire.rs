//! The socket side of a channel: name validation, the abstract rendezvous
//! address, and the fixed-size messages exchanged over the `SOCK_SEQPACKET`
//! connection (with file descriptors attached by `SCM_RIGHTS`).
//!
//! Messages are 32 bytes, little-endian, so decoding is plain integer parsing
//! and a peer cannot make us allocate or read past a buffer. Every decoded
//! message is then range-checked by its user (publisher or subscriber).
//! Depends on nothing else in this crate except the error type.

use crate::{ChannelError, Result};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix,
};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;

/// Longest accepted channel name.
pub const MAX_NAME_LEN: usize = 64;

/// Check a channel name: 1..=64 characters of `[A-Za-z0-9._-]`, not starting with '.'.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why| {
        Err(ChannelError::InvalidName {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 64 characters");
    }
    if name.starts_with('.') {
        return bad("must not start with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// The abstract socket address of a channel: `"\0framebus/<uid>/<name>"`.
/// Abstract names have no permissions, so both ends check the peer's uid.
pub fn address(name: &str) -> Result<SocketAddrUnix> {
    validate_name(name)?;
    let uid = rustix::process::getuid().as_raw();
    SocketAddrUnix::new_abstract_name(format!("framebus/{uid}/{name}").as_bytes())
        .map_err(|e| ChannelError::os("socket address", e))
}

/// The abstract address of a channel's info socket:
/// `"\0framebus/<uid>/<name>/info"` ('/' is not allowed in names, so it can
/// never be another channel's address). `framebus ls` asks it for an [`Info`]
/// without subscribing.
pub fn info_address(name: &str) -> Result<SocketAddrUnix> {
    validate_name(name)?;
    let uid = rustix::process::getuid().as_raw();
    SocketAddrUnix::new_abstract_name(format!("framebus/{uid}/{name}/info").as_bytes())
        .map_err(|e| ChannelError::os("socket address", e))
}

/// Fail unless the peer of `sock` runs as our own uid.
pub fn check_peer_uid(sock: BorrowedFd<'_>, name: &str) -> Result<()> {
    let cred = rustix::net::sockopt::socket_peercred(sock)
        .map_err(|e| ChannelError::os("SO_PEERCRED", e))?;
    let me = rustix::process::getuid().as_raw();
    if cred.uid.as_raw() != me {
        return Err(ChannelError::WrongUser {
            name: name.to_owned(),
            expected: me,
            got: cred.uid.as_raw(),
        });
    }
    Ok(())
}

pub const MSG_LEN: usize = 32;
/// 2: slot-table indexes may exceed the hello's `max_slots` (the table grows
/// while every entry is pinned), up to [`MAX_SLOT_TABLE`].
pub const PROTOCOL_VERSION: u32 = 2;
/// Hard limit of a channel's slot table: every slot index is below it, and a
/// hello's `max_slots` is at most this.
pub const MAX_SLOT_TABLE: u32 = 4096;

/// One message on the channel socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg {
    /// pub → sub, with fds [control memfd, doorbell eventfd].
    Hello {
        version: u32,
        mode: u32,
        depth: u32,
        ring: u32,
        first_ticket: u64,
        max_slots: u32,
    },
    /// pub → sub, with the slot's (read-only) memfd: table entry `index` now
    /// holds generation `gen` of `capacity` bytes.
    Slot { index: u32, gen: u32, capacity: u64 },
    /// pub → sub: table entry `index` (generation `gen`) is retired; close its fd.
    Forget { index: u32, gen: u32 },
    /// sub → pub: the frame delivered under `ticket` is released.
    Release { ticket: u64 },
    /// sub → pub: stop delivering to me (pins stay until released or hang-up).
    Bye,
}

const K_HELLO: u32 = 1;
const K_SLOT: u32 = 2;
const K_FORGET: u32 = 3;
const K_RELEASE: u32 = 10;
const K_BYE: u32 = 11;

impl Msg {
    pub fn encode(&self) -> [u8; MSG_LEN] {
        let mut b = [0u8; MSG_LEN];
        let (kind, w1, w2, q1, q2) = match *self {
            Msg::Hello {
                version,
                mode,
                depth,
                ring,
                first_ticket,
                ..
            } => (
                K_HELLO,
                version,
                mode,
                u64::from(depth) | u64::from(ring) << 32,
                first_ticket,
            ),
            Msg::Slot {
                index,
                gen,
                capacity,
            } => (K_SLOT, index, gen, capacity, 0),
            Msg::Forget { index, gen } => (K_FORGET, index, gen, 0, 0),
            Msg::Release { ticket } => (K_RELEASE, 0, 0, ticket, 0),
            Msg::Bye => (K_BYE, 0, 0, 0, 0),
        };
        b[0..4].copy_from_slice(&kind.to_le_bytes());
        b[4..8].copy_from_slice(&w1.to_le_bytes());
        b[8..12].copy_from_slice(&w2.to_le_bytes());
        if let Msg::Hello { max_slots, .. } = *self {
            b[12..16].copy_from_slice(&max_slots.to_le_bytes());
        }
        b[16..24].copy_from_slice(&q1.to_le_bytes());
        b[24..32].copy_from_slice(&q2.to_le_bytes());
        b
    }

    /// Decode a message; unknown kinds and short messages are `Corrupt`.
    pub fn decode(b: &[u8]) -> Result<Msg> {
        if b.len() != MSG_LEN {
            return Err(ChannelError::Corrupt(format!(
                "socket message of {} bytes, expected {MSG_LEN}",
                b.len()
            )));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(match u32_at(0) {
            K_HELLO => {
                let q1 = u64_at(16);
                Msg::Hello {
                    version: u32_at(4),
                    mode: u32_at(8),
                    max_slots: u32_at(12),
                    depth: q1 as u32,
                    ring: (q1 >> 32) as u32,
                    first_ticket: u64_at(24),
                }
            }
            K_SLOT => Msg::Slot {
                index: u32_at(4),
                gen: u32_at(8),
                capacity: u64_at(16),
            },
            K_FORGET => Msg::Forget {
                index: u32_at(4),
                gen: u32_at(8),
            },
            K_RELEASE => Msg::Release { ticket: u64_at(16) },
            K_BYE => Msg::Bye,
            k => return Err(ChannelError::Corrupt(format!("unknown message kind {k}"))),
        })
    }
}

/// Send one message with optional fds, without blocking and without SIGPIPE.
pub fn send_msg(sock: BorrowedFd<'_>, msg: &Msg, fds: &[BorrowedFd<'_>]) -> rustix::io::Result<()> {
    let bytes = msg.encode();
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !anc.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(Errno::INVAL);
    }
    let n = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(&bytes)],
        &mut anc,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )?;
    if n != MSG_LEN {
        return Err(Errno::MSGSIZE);
    }
    Ok(())
}

/// What a non-blocking receive found.
#[derive(Debug)]
pub enum Recv {
    Msg(Msg, Vec<OwnedFd>),
    /// Nothing queued right now.
    Empty,
    /// The peer hung up.
    Eof,
}

/// Receive one message and its fds without blocking. At most 4 fds are
/// accepted per message; more (or a truncated message) is `Corrupt`.
pub fn recv_msg(sock: BorrowedFd<'_>) -> Result<Recv> {
    let mut bytes = [0u8; MSG_LEN + 1];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let r = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut bytes)],
        &mut anc,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    );
    let r = match r {
        Ok(r) => r,
        Err(Errno::AGAIN) => return Ok(Recv::Empty),
        Err(Errno::INTR) => return Ok(Recv::Empty),
        Err(Errno::CONNRESET) | Err(Errno::PIPE) => return Ok(Recv::Eof),
        Err(e) => return Err(ChannelError::os("recvmsg", e)),
    };
    // Take ownership of every fd first, so they are closed even on error.
    let mut fds = Vec::new();
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it);
        }
    }
    if r.bytes == 0 && fds.is_empty() {
        return Ok(Recv::Eof);
    }
    if r.flags.contains(ReturnFlags::CTRUNC) || r.flags.contains(ReturnFlags::TRUNC) {
        return Err(ChannelError::Corrupt(
            "truncated socket message or too many fds".into(),
        ));
    }
    let msg = Msg::decode(&bytes[..r.bytes])?;
    Ok(Recv::Msg(msg, fds))
}

/// Wait until `fds` are readable (or hung up), up to `timeout` (None = forever).
/// Returns the revents of each fd; EINTR returns all-empty.
pub fn wait_readable(
    fds: &[BorrowedFd<'_>],
    timeout: Option<std::time::Duration>,
) -> Result<Vec<rustix::event::PollFlags>> {
    use rustix::event::{PollFd, PollFlags};
    let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|f| PollFd::new(f, PollFlags::IN)).collect();
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    match rustix::event::poll(&mut pfds, ts.as_ref()) {
        Ok(_) | Err(Errno::INTR) => Ok(pfds.iter().map(|p| p.revents()).collect()),
        Err(e) => Err(ChannelError::os("poll", e)),
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock both ends of a channel share
/// (and Python's `time.monotonic_ns()`).
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// Ring an eventfd doorbell (a full counter is already ringing: fine).
pub fn ring_doorbell(efd: BorrowedFd<'_>) {
    let _ = rustix::io::write(efd, &1u64.to_ne_bytes());
}

/// Clear an eventfd doorbell without blocking (it is opened non-blocking).
pub fn clear_doorbell(efd: BorrowedFd<'_>) {
    let mut b = [0u8; 8];
    let _ = rustix::io::read(efd, &mut b);
}

/// A read-only file description for a slot memfd, so a subscriber can never map
/// it writable (reopened through /proc; falls back to a dup of `fd`).
pub fn reopen_readonly(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    use rustix::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match rustix::fs::open(
        path.as_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(ro) => Ok(ro),
        Err(_) => fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| ChannelError::Os {
                op: "dup slot fd",
                source: e,
            }),
    }
}

/// Length of an [`Info`] record on the info socket.
pub const INFO_LEN: usize = 96;
/// Version of the [`Info`] record (independent of [`PROTOCOL_VERSION`]: the
/// info socket is a separate, read-only conversation).
pub const INFO_VERSION: u32 = 1;
const K_INFO: u32 = 20;
/// Frame sizes a sane [`Info`] may claim (the same bound as a descriptor's
/// layout check would reach anyway).
const MAX_INFO_DIM: u32 = 1 << 20;

/// What a publisher tells `framebus ls` about itself: one fixed-size
/// little-endian record, sent on its info socket and then hung up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// `Mode::code()`: 1 latest, 2 lossless.
    pub mode: u32,
    /// Lossless queue depth (0 in latest mode).
    pub depth: u32,
    /// Subscribers connected and receiving.
    pub subscribers: u32,
    /// The last frame sent: width, height and `PixelFormat::ALL` index + 1
    /// (0: nothing sent yet).
    pub width: u32,
    pub height: u32,
    pub format: u32,
    /// Frames sent so far.
    pub sent: u64,
    /// Latest mode: frames replaced before a subscriber took them.
    pub replaced: u64,
    /// Frames pinned by subscribers right now.
    pub pins: u64,
    /// Average interval between sends (exponential, reset after a 1 s
    /// pause), 0 when unknown.
    pub period_ns: u64,
    /// Nanoseconds since the last send (`u64::MAX`: never sent).
    pub since_last_ns: u64,
    /// Bytes mapped by the publisher's own pool.
    pub pool_bytes: u64,
}

impl Info {
    pub fn encode(&self) -> [u8; INFO_LEN] {
        let mut b = [0u8; INFO_LEN];
        let words = [
            K_INFO,
            INFO_VERSION,
            self.mode,
            self.depth,
            self.subscribers,
            self.width,
            self.height,
            self.format,
        ];
        for (i, w) in words.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        let quads = [
            self.sent,
            self.replaced,
            self.pins,
            self.period_ns,
            self.since_last_ns,
            self.pool_bytes,
        ];
        for (i, q) in quads.iter().enumerate() {
            b[32 + i * 8..40 + i * 8].copy_from_slice(&q.to_le_bytes());
        }
        b
    }

    /// Decode and range-check an info record from an untrusted peer.
    pub fn decode(b: &[u8]) -> Result<Info> {
        if b.len() != INFO_LEN {
            return Err(ChannelError::Corrupt(format!(
                "info record of {} bytes, expected {INFO_LEN}",
                b.len()
            )));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if u32_at(0) != K_INFO {
            return Err(ChannelError::Corrupt(format!(
                "info record of kind {}, expected {K_INFO}",
                u32_at(0)
            )));
        }
        if u32_at(4) != INFO_VERSION {
            return Err(ChannelError::Corrupt(format!(
                "info record version {}, expected {INFO_VERSION}",
                u32_at(4)
            )));
        }
        let info = Info {
            mode: u32_at(8),
            depth: u32_at(12),
            subscribers: u32_at(16),
            width: u32_at(20),
            height: u32_at(24),
            format: u32_at(28),
            sent: u64_at(32),
            replaced: u64_at(40),
            pins: u64_at(48),
            period_ns: u64_at(56),
            since_last_ns: u64_at(64),
            pool_bytes: u64_at(72),
        };
        let mode_ok = match info.mode {
            1 => info.depth == 0,
            2 => (1..=MAX_SLOT_TABLE).contains(&info.depth),
            _ => false,
        };
        let formats = framebus_core::PixelFormat::ALL.len() as u32;
        if !mode_ok
            || info.format > formats
            || info.width > MAX_INFO_DIM
            || info.height > MAX_INFO_DIM
            || (info.format == 0) != (info.width == 0 && info.height == 0)
        {
            return Err(ChannelError::Corrupt(format!(
                "info record with mode {} depth {}, frame {}x{} format code {}",
                info.mode, info.depth, info.width, info.height, info.format
            )));
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_round_trips_and_garbage_is_rejected() {
        let info = Info {
            mode: 2,
            depth: 4,
            subscribers: 3,
            width: 1920,
            height: 1080,
            format: 1,
            sent: 10,
            replaced: 2,
            pins: 1,
            period_ns: 16_666_667,
            since_last_ns: 5,
            pool_bytes: 1 << 30,
        };
        assert_eq!(Info::decode(&info.encode()).unwrap(), info);
        assert!(Info::decode(&[0u8; INFO_LEN - 1]).is_err());
        assert!(Info::decode(&[0xffu8; INFO_LEN]).is_err());
        let mut b = info.encode();
        b[4] = 9; // version
        assert!(Info::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("version 9"));
        for bad in [
            Info { mode: 3, ..info },
            Info { depth: 0, ..info },
            Info { format: 99, ..info },
            Info {
                width: u32::MAX,
                ..info
            },
            Info { format: 0, ..info },
        ] {
            assert!(Info::decode(&bad.encode()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_validated() {
        for ok in ["cam0", "a", "x.y_z-1", &"n".repeat(64)] {
            validate_name(ok).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("a/b", "only letters"),
            (".hidden", "'.'"),
            ("sp ace", "only letters"),
            ("é", "only letters"),
        ] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(&format!("{bad:?}")), "{e}");
        }
        let long = "n".repeat(65);
        assert!(validate_name(&long).unwrap_err().to_string().contains("64"));
    }

    #[test]
    fn messages_round_trip_and_garbage_is_rejected() {
        let msgs = [
            Msg::Hello {
                version: 1,
                mode: 2,
                depth: 7,
                ring: 256,
                first_ticket: 99,
                max_slots: 64,
            },
            Msg::Slot {
                index: 3,
                gen: 9,
                capacity: 1 << 33,
            },
            Msg::Release { ticket: u64::MAX },
            Msg::Forget { index: 5, gen: 6 },
            Msg::Bye,
        ];
        for m in msgs {
            assert_eq!(Msg::decode(&m.encode()).unwrap(), m);
        }
        assert!(Msg::decode(&[0u8; 31]).is_err());
        assert!(Msg::decode(&[0xffu8; 32]).is_err());
    }
}
