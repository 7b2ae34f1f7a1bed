//! MIT-SHM: the version check and the cache of X server segments attached to
//! pool slots.
//!
//! Each pool slot is a memfd. The first time a slot is grabbed into, its fd is
//! sent to the server with `ShmAttachFd` (MIT-SHM ≥ 1.2) and the segment id is
//! remembered under the slot's id; later grabs into the same (reused) slot go
//! straight to `ShmGetImage`. The server keeps the memfd's pages alive while
//! the segment is attached, so every entry also holds the slot's liveness
//! token ([`framebus_core::Lease::slot_liveness`]) and is detached as soon as
//! the pool unmaps the slot (trim, eviction, close) — slot ids are never
//! reused, so a dead entry can never be hit again anyway.
//!
//! Used by `backend`; depends on `connection`.

use crate::connection::XConn;
use crate::error::describe_reply_error;
use crate::{CaptureError, Result};
use framebus_core::Lease;
use std::collections::HashMap;
use std::sync::Weak;
use x11rb::connection::Connection;
use x11rb::protocol::shm::{self, ConnectionExt as _};

/// Why MIT-SHM cannot be used on a connection, or `Ok` when it can.
pub(crate) fn check_available(xc: &XConn) -> std::result::Result<(), String> {
    if xc.is_tcp {
        return Err(format!(
            "display {:?} is reached over TCP; MIT-SHM needs the server on this machine \
             (a Unix socket to pass the memfd)",
            xc.display
        ));
    }
    match xc.has_extension(shm::X11_EXTENSION_NAME) {
        Ok(true) => {}
        Ok(false) => return Err("the X server has no MIT-SHM extension".into()),
        Err(e) => return Err(e.to_string()),
    }
    let v = xc
        .conn
        .shm_query_version()
        .map_err(|e| e.to_string())?
        .reply()
        .map_err(|e| describe_reply_error(&e))?;
    if (v.major_version, v.minor_version) < (1, 2) {
        return Err(format!(
            "MIT-SHM {}.{} is too old: attaching a memfd needs 1.2",
            v.major_version, v.minor_version
        ));
    }
    Ok(())
}

struct Segment {
    seg: shm::Seg,
    alive: Weak<()>,
}

/// Segments attached to pool slots, keyed by slot id.
#[derive(Default)]
pub(crate) struct SegmentCache {
    segments: HashMap<u64, Segment>,
}

impl SegmentCache {
    /// The segment for `lease`'s slot, attaching its memfd on first use.
    /// An `Err` here means MIT-SHM does not work on this server (for example
    /// BadAccess from another IPC namespace or a sandbox): the caller switches
    /// backends once with this reason.
    pub fn segment_for(
        &mut self,
        xc: &XConn,
        lease: &Lease,
    ) -> std::result::Result<shm::Seg, String> {
        let id = lease.slot_id();
        if let Some(s) = self.segments.get(&id) {
            return Ok(s.seg);
        }
        let fd = lease
            .fd()
            .ok_or("the pool slot has no file descriptor")?
            .try_clone_to_owned()
            .map_err(|e| format!("dup of the slot's memfd failed: {e}"))?;
        let seg = xc.conn.generate_id().map_err(|e| e.to_string())?;
        // Checked (one round trip per new slot only) so a refusal shows up here,
        // tied to this request, and not later as a stray error event.
        xc.conn
            .shm_attach_fd(seg, fd, false)
            .map_err(|e| format!("ShmAttachFd could not be sent: {e}"))?
            .check()
            .map_err(|e| format!("ShmAttachFd was refused: {}", describe_reply_error(&e)))?;
        self.segments.insert(
            id,
            Segment {
                seg,
                alive: lease.slot_liveness(),
            },
        );
        Ok(seg)
    }

    /// Detach the segments whose slots the pool has unmapped.
    pub fn sweep(&mut self, xc: &XConn) -> Result<()> {
        let dead: Vec<u64> = self
            .segments
            .iter()
            .filter(|(_, s)| s.alive.strong_count() == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            if let Some(s) = self.segments.remove(&id) {
                xc.conn
                    .shm_detach(s.seg)
                    .map_err(|e| CaptureError::x("ShmDetach", e))?;
            }
        }
        Ok(())
    }

    /// Detach everything (backend switch or shutdown). Errors are ignored: the
    /// server frees a client's segments when it disconnects anyway.
    pub fn clear(&mut self, xc: &XConn) {
        for (_, s) in self.segments.drain() {
            let _ = xc.conn.shm_detach(s.seg);
        }
        let _ = xc.conn.flush();
    }

    /// Segments currently attached.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Test hook: make the cached segment of `slot_id` point at a segment id
    /// the server never attached, so the next ShmGetImage fails like a server
    /// that refuses MIT-SHM.
    #[cfg(test)]
    pub fn corrupt(&mut self, slot_id: u64) {
        if let Some(s) = self.segments.get_mut(&slot_id) {
            s.seg = s.seg.wrapping_add(0x1000);
        }
    }
}
