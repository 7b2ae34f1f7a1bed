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
//! **Shared pixmaps** (incremental grabs): when the server offers them, a
//! slot's segment also backs a pixmap of the region's size (`ShmCreatePixmap`
//! at offset 0, Z-format, so its rows are the slot's rows). `CopyArea` from
//! the root into that pixmap then lands each changed rectangle in place with
//! the slot's stride: only the changed pixels move, not whole rows
//! ([`SegmentCache::copy_rects`]). The pixmap lives as long as the segment.
//!
//! Used by `backend` and `x11`; depends on `connection`.

use crate::connection::XConn;
use crate::damage::Rect;
use crate::error::describe_reply_error;
use crate::{CaptureError, Region, Result};
use framebus_core::Lease;
use std::collections::HashMap;
use std::sync::Weak;
use x11rb::connection::Connection;
use x11rb::protocol::shm::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{self, ConnectionExt as _};

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
    /// A pixmap over the segment and the size it was made for.
    pixmap: Option<(xproto::Pixmap, u32, u32)>,
}

/// Whether `ShmCreatePixmap` + `CopyArea` can fill slots (asked once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum PixmapSupport {
    #[default]
    Unknown,
    /// Usable, with this GC (IncludeInferiors, no graphics exposures).
    Yes(xproto::Gcontext),
    No,
}

/// Segments attached to pool slots, keyed by slot id.
#[derive(Default)]
pub(crate) struct SegmentCache {
    segments: HashMap<u64, Segment>,
    pixmaps: PixmapSupport,
}

/// Free a segment's pixmap and detach it (unchecked: errors are dropped).
fn release(xc: &XConn, s: &Segment) -> std::result::Result<(), x11rb::errors::ConnectionError> {
    if let Some((pixmap, _, _)) = s.pixmap {
        xc.conn.free_pixmap(pixmap)?;
    }
    xc.conn.shm_detach(s.seg)?;
    Ok(())
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
                pixmap: None,
            },
        );
        Ok(seg)
    }

    /// True when the server offers Z-format shared pixmaps at the root depth
    /// (asked once per connection; a GC for the copies is made then).
    pub fn shared_pixmaps(&mut self, xc: &XConn) -> Result<bool> {
        if self.pixmaps == PixmapSupport::Unknown {
            let v = xc
                .conn
                .shm_query_version()
                .map_err(|e| CaptureError::x("ShmQueryVersion", e))?
                .reply()
                .map_err(|e| CaptureError::x("ShmQueryVersion", e))?;
            self.pixmaps = PixmapSupport::No;
            if v.shared_pixmaps && v.pixmap_format == u8::from(xproto::ImageFormat::Z_PIXMAP) {
                let gc = xc
                    .conn
                    .generate_id()
                    .map_err(|e| CaptureError::x("generate_id", e))?;
                // IncludeInferiors: the root's pixels as shown, windows
                // included (what GetImage of the root returns).
                let aux = xproto::CreateGCAux::new()
                    .subwindow_mode(xproto::SubwindowMode::INCLUDE_INFERIORS)
                    .graphics_exposures(0);
                let made = xc
                    .conn
                    .create_gc(gc, xc.root, &aux)
                    .map_err(|e| CaptureError::x("CreateGC", e))?
                    .check();
                if made.is_ok() {
                    self.pixmaps = PixmapSupport::Yes(gc);
                }
            }
        }
        Ok(matches!(self.pixmaps, PixmapSupport::Yes(_)))
    }

    /// The pixmap over `lease`'s segment, `width` × `height` at the root
    /// depth, made on first use (one checked round trip). Err: the server
    /// refused (shared pixmaps are then off for this connection).
    fn pixmap_for(
        &mut self,
        xc: &XConn,
        lease: &Lease,
        width: u32,
        height: u32,
    ) -> std::result::Result<xproto::Pixmap, String> {
        let seg = self.segment_for(xc, lease)?;
        let s = self
            .segments
            .get_mut(&lease.slot_id())
            .ok_or("the segment vanished")?;
        match s.pixmap {
            Some((p, w, h)) if (w, h) == (width, height) => return Ok(p),
            Some((p, _, _)) => {
                s.pixmap = None;
                xc.conn.free_pixmap(p).map_err(|e| e.to_string())?;
            }
            None => {}
        }
        let p = xc.conn.generate_id().map_err(|e| e.to_string())?;
        xc.conn
            .shm_create_pixmap(p, xc.root, width as u16, height as u16, xc.depth, seg, 0)
            .map_err(|e| e.to_string())?
            .check()
            .map_err(|e| format!("ShmCreatePixmap was refused: {}", describe_reply_error(&e)))?;
        s.pixmap = Some((p, width, height));
        Ok(p)
    }

    /// Copy `rects` (frame coordinates, inside `region`) from the root into
    /// `lease`'s slot in place, through the slot's shared pixmap: every
    /// `CopyArea` is sent, then one round trip. `Ok(false)`: shared pixmaps
    /// do not work here (now off for good; nothing was copied, grab another
    /// way).
    pub fn copy_rects(
        &mut self,
        xc: &XConn,
        lease: &Lease,
        region: Region,
        rects: &[Rect],
    ) -> Result<bool> {
        let PixmapSupport::Yes(gc) = self.pixmaps else {
            return Ok(false);
        };
        let pixmap = match self.pixmap_for(xc, lease, region.width, region.height) {
            Ok(p) => p,
            Err(_refused) => {
                self.pixmaps = PixmapSupport::No;
                let _ = xc.conn.free_gc(gc);
                return Ok(false);
            }
        };
        let mut cookies = Vec::with_capacity(rects.len());
        for r in rects {
            // A region checked against the screen: its coordinates fit i16
            // and its sizes u16; `r` lies inside it.
            let cookie = xc
                .conn
                .copy_area(
                    xc.root,
                    pixmap,
                    gc,
                    (region.left + r.x0) as i16,
                    (region.top + r.y0) as i16,
                    r.x0 as i16,
                    r.y0 as i16,
                    (r.x1 - r.x0) as u16,
                    (r.y1 - r.y0) as u16,
                )
                .map_err(|e| CaptureError::x("CopyArea", e))?;
            cookies.push(cookie);
        }
        // One round trip: when its reply is here, every copy is done.
        xc.conn
            .get_input_focus()
            .map_err(|e| CaptureError::x("GetInputFocus", e))?
            .reply()
            .map_err(|e| CaptureError::x("GetInputFocus", e))?;
        let mut failure = None;
        for c in cookies {
            // Answered already (the reply above came later): no round trip.
            if let Err(e) = c.check() {
                failure.get_or_insert(CaptureError::X {
                    op: "CopyArea",
                    detail: describe_reply_error(&e),
                });
            }
        }
        failure.map_or(Ok(true), Err)
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
                release(xc, &s).map_err(|e| CaptureError::x("ShmDetach", e))?;
            }
        }
        Ok(())
    }

    /// Detach everything (backend switch or shutdown). Errors are ignored: the
    /// server frees a client's segments when it disconnects anyway.
    pub fn clear(&mut self, xc: &XConn) {
        for (_, s) in self.segments.drain() {
            let _ = release(xc, &s);
        }
        if let PixmapSupport::Yes(gc) = std::mem::take(&mut self.pixmaps) {
            let _ = xc.conn.free_gc(gc);
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

    /// Test hook: behave as a server without shared pixmaps from now on.
    #[cfg(test)]
    pub fn refuse_pixmaps(&mut self) {
        self.pixmaps = PixmapSupport::No;
    }
}
