//! The publisher's background thread: accept subscribers (checking their uid),
//! read their `RELEASE` and `BYE` messages, notice hang-ups (`kill -9`
//! included: the kernel closes the socket and `poll` reports it) and drop the
//! pins of a subscriber that is gone, retire slots nobody used for a while,
//! and — once the channel is closed — let go of each subscriber as soon as it
//! pins nothing, then exit.
//!
//! Every function here takes the `state` lock briefly and never sleeps under
//! it; leases are dropped outside it.

use super::{Link, Shared, State, SubConn, RING};
use crate::shm::Control;
use crate::wire::{self, Msg, Recv};
use crate::{ChannelError, Mode, Result};
use framebus_core::Lease;
use rustc_hash::FxHashMap;
use rustix::event::PollFlags;
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::SocketFlags;
use std::sync::Arc;
use std::time::Duration;

/// The thread's body: runs until the channel is closed and every subscriber
/// has released what it pinned (or hung up).
pub(super) fn serve(sh: Arc<Shared>, listener: OwnedFd, info: Option<OwnedFd>) {
    let mut listener = Some(listener);
    let mut info = info;
    loop {
        let socks: Vec<(u64, Arc<OwnedFd>)> = {
            let mut st = sh.lock();
            if st.closed && listener.is_some() {
                info = None;
                listener = None; // the name is free from here on
                st.listener_open = false;
                sh.changed.notify_all();
            }
            if st.closed && st.subs.is_empty() {
                return;
            }
            st.subs.iter().map(|s| (s.id, s.sock.clone())).collect()
        };
        let mut fds = vec![sh.wake.as_fd()];
        if let Some(l) = &listener {
            fds.push(l.as_fd());
        }
        if let Some(i) = &info {
            fds.push(i.as_fd());
        }
        fds.extend(socks.iter().map(|(_, s)| s.as_fd()));
        let housekeeping =
            (sh.cfg.idle_slot_timeout / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let revents = match wire::wait_readable(&fds, Some(housekeeping)) {
            Ok(r) => r,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if !revents[0].is_empty() {
            wire::clear_doorbell(sh.wake.as_fd());
        }
        let base = 1 + usize::from(listener.is_some()) + usize::from(info.is_some());
        if let Some(l) = &listener {
            if !revents[1].is_empty() {
                accept_all(&sh, l);
            }
        }
        if let Some(i) = &info {
            if !revents[base - 1].is_empty() {
                answer_info(&sh, i);
            }
        }
        let mut dropped = Vec::new();
        for (k, (id, sock)) in socks.iter().enumerate() {
            let ev = revents[base + k];
            if ev.is_empty() {
                continue;
            }
            read_messages(&sh, *id, sock, ev, &mut dropped);
        }
        reap(&sh, &mut dropped);
        drop(dropped); // leases go back to their pools outside the lock
        retire_idle_slots(&sh);
    }
}

/// Tell subscribers to close the fds of slots nobody used for a while.
fn retire_idle_slots(sh: &Shared) {
    let mut st = sh.lock();
    if st.closed {
        return; // sockets are shut for writing; subscribers drop fds on close
    }
    let State { subs, table, .. } = &mut *st;
    for (index, gen) in table.take_idle(sh.cfg.idle_slot_timeout) {
        for s in subs.iter_mut().filter(|s| s.active()) {
            if s.sent_gen.get(index as usize) == Some(&gen) {
                s.sent_gen[index as usize] = 0;
                if wire::send_msg(s.sock.as_fd(), &Msg::Forget { index, gen }, &[]).is_err() {
                    s.cut_off();
                }
            }
        }
    }
}

/// Answer every pending info request (`framebus ls`): one [`wire::Info`]
/// record, then hang up. The asker never becomes a subscriber.
fn answer_info(sh: &Shared, listener: &OwnedFd) {
    loop {
        let Ok(sock) =
            rustix::net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)
        else {
            return; // EAGAIN (drained) or a transient error
        };
        if wire::check_peer_uid(sock.as_fd(), &sh.name).is_err() {
            continue; // another user: hang up
        }
        let mut info = {
            let st = sh.lock();
            let (mode, depth) = match sh.cfg.mode {
                Mode::Latest => (Mode::Latest.code(), 0),
                m @ Mode::Lossless { depth } => (m.code(), depth),
            };
            wire::Info {
                mode,
                depth,
                subscribers: st.receiving() as u32,
                width: st.last_frame.0,
                height: st.last_frame.1,
                format: st.last_frame.2,
                sent: st.stats.sent,
                replaced: st.stats.replaced,
                pins: st.subs.iter().map(|s| s.pins.len() as u64).sum(),
                period_ns: st.period_ns,
                since_last_ns: if st.last_sent_ns == 0 {
                    u64::MAX
                } else {
                    wire::monotonic_ns().saturating_sub(st.last_sent_ns)
                },
                pool_bytes: 0,
            }
        };
        // Outside the state lock: the pool has its own.
        info.pool_bytes = sh.pool.stats().bytes_mapped as u64;
        let _ = rustix::net::send(
            &sock,
            &info.encode(),
            rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
        );
    }
}

fn accept_all(sh: &Arc<Shared>, listener: &OwnedFd) {
    loop {
        let sock = match rustix::net::accept_with(
            listener,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        ) {
            Ok(s) => s,
            Err(_) => return, // EAGAIN (drained) or a transient error
        };
        if wire::check_peer_uid(sock.as_fd(), &sh.name).is_err() {
            continue; // another user: hang up
        }
        let _ = add_subscriber(sh, sock);
    }
}

fn add_subscriber(sh: &Arc<Shared>, sock: OwnedFd) -> Result<()> {
    let ctrl = Control::create(RING)?;
    let doorbell = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .map_err(|e| ChannelError::os("eventfd", e))?;
    let mut st = sh.lock();
    if st.closed {
        return Ok(());
    }
    let (mode, depth) = match sh.cfg.mode {
        Mode::Latest => (Mode::Latest.code(), 0),
        m @ Mode::Lossless { depth } => (m.code(), depth),
    };
    let hello = Msg::Hello {
        version: wire::PROTOCOL_VERSION,
        mode,
        depth,
        ring: RING,
        first_ticket: st.next_ticket,
        max_slots: sh.cfg.max_slots,
    };
    wire::send_msg(sock.as_fd(), &hello, &[ctrl.fd(), doorbell.as_fd()])
        .map_err(|e| ChannelError::os("send hello", e))?;
    let id = st.next_sub_id;
    st.next_sub_id += 1;
    st.subs.push(SubConn {
        id,
        sock: Arc::new(sock),
        link: Some(Link {
            ctrl: Arc::new(ctrl),
            doorbell,
        }),
        sent_gen: Vec::new(),
        pins: FxHashMap::default(),
        wpos: 0,
        releases_seen: 0,
        leaving: false,
        dead: false,
    });
    sh.changed.notify_all();
    Ok(())
}

/// Read what subscriber `id` sent: releases unpin (their leases go to
/// `dropped`), `BYE` stops deliveries, EOF or garbage marks it dead. After
/// close, a subscriber that pins nothing any more is let go (marked dead).
pub(super) fn read_messages(
    sh: &Arc<Shared>,
    id: u64,
    sock: &OwnedFd,
    ev: PollFlags,
    dropped: &mut Vec<Lease>,
) {
    let mut releases = Vec::new();
    let mut bye = false;
    let mut dead = false;
    // Bounded batch: a flooding peer cannot starve the other subscribers.
    for _ in 0..4096 {
        match wire::recv_msg(sock.as_fd()) {
            Ok(Recv::Msg(Msg::Release { ticket }, _)) => releases.push(ticket),
            Ok(Recv::Msg(Msg::Bye, _)) => bye = true,
            Ok(Recv::Empty) => break,
            // EOF, garbage or an unexpected message: treat as a hang-up.
            Ok(Recv::Eof) | Ok(Recv::Msg(..)) | Err(_) => {
                dead = true;
                break;
            }
        }
    }
    if !dead && ev.intersects(PollFlags::HUP | PollFlags::ERR) {
        dead = true;
    }
    let mut st = sh.lock();
    let State {
        subs,
        table,
        closed,
        ..
    } = &mut *st;
    if let Some(s) = subs.iter_mut().find(|s| s.id == id) {
        s.releases_seen = s.releases_seen.wrapping_add(releases.len() as u32);
        for t in releases {
            if let Some((l, i)) = s.pins.remove(&t) {
                table.unpin(i);
                dropped.push(l);
            }
        }
        if bye && !s.leaving {
            s.leaving = true;
            if let Some(link) = &s.link {
                wake_blocked_sender(&link.ctrl); // it may be waiting for room in this queue
            }
        }
        s.dead |= dead || (*closed && s.pins.is_empty());
    }
}

/// Wake a sender sleeping on this subscriber's `read_pos` (it re-checks).
fn wake_blocked_sender(ctrl: &Control) {
    let _ = rustix::thread::futex::wake(
        &ctrl.header().read_pos,
        rustix::thread::futex::Flags::empty(),
        i32::MAX as u32,
    );
}

/// Remove dead subscribers: drop their pins and wake a sender blocked on them.
pub(super) fn reap(sh: &Arc<Shared>, dropped: &mut Vec<Lease>) {
    let mut st = sh.lock();
    if !st.subs.iter().any(|s| s.dead) {
        return;
    }
    let State {
        subs, table, stats, ..
    } = &mut *st;
    subs.retain_mut(|s| {
        if !s.dead {
            return true;
        }
        for (_, (l, i)) in s.pins.drain() {
            table.unpin(i);
            dropped.push(l);
        }
        stats.disconnected += 1;
        if let Some(link) = &s.link {
            wake_blocked_sender(&link.ctrl);
        }
        false
    });
    sh.changed.notify_all();
}
