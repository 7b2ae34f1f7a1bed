//! `X11Source`: one X connection that grabs regions into pool slots (the
//! X11 [`Source`] behind a [`crate::Grabber`]).
//!
//! Ties the modules together: validates the region against the current
//! screen (`monitors`), leases a slot sized to the region from the caller's
//! pool, fills it with the active backend (`backend`), optionally blends the
//! cursor in (`cursor`), and returns a read-only BGRA [`Frame`] stamped with
//! the capture time (`CLOCK_MONOTONIC` ns, taken just before the request is
//! sent) and a per-grabber sequence number.
//!
//! With damage tracking on ([`Grabber::track_damage`], see `damage`), each
//! frame's changed rectangles are kept ([`Grabber::last_damage`]) and, when
//! incremental, a reused slot is refreshed by copying only the rows that
//! changed since its pixels were grabbed. This module owns the one event
//! loop (`pump`): RandR events go to `monitors`, DamageNotify to `damage`.
//!
//! Backend switching happens here, once: `Auto` starts on MIT-SHM when the
//! server offers it on a local socket, and moves to XGetImage for good the
//! first time the SHM machinery itself fails, recording why. A bad region is
//! checked before any X request and never causes a switch.

use crate::backend::{self, Backend, BackendChoice, ShmFailure};
use crate::connection::XConn;
use crate::cursor::{self, CursorSource};
use crate::damage::{self, DamageTracker, Plan, Rect};
use crate::monitors::{Monitor, ScreenState};
use crate::shm::{self, SegmentCache};
use crate::source::Source;
use crate::{CaptureError, Region, Result};
use framebus_core::{Exhausted, Frame, FrameLayout, FramePool, PixelFormat};
use std::time::Duration;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::ConnectionExt as _;

/// A connection to one X display that grabs into pool slots. Not `Sync`: use
/// one per thread, or a mutex (the Python bindings do).
pub(crate) struct X11Source {
    xc: XConn,
    screen: ScreenState,
    choice: BackendChoice,
    backend: Backend,
    backend_reason: Option<String>,
    segments: SegmentCache,
    /// A grab through SHM has succeeded: later SHM errors are real errors.
    shm_proven: bool,
    cursor: CursorSource,
    pool: FramePool,
    seq: u64,
    /// XDamage subscription and history (None: damage not tracked).
    damage: Option<DamageTracker>,
    /// The changed rectangles of the last frame (frame coordinates).
    last_damage: Option<Vec<Region>>,
    /// Grabs that copied only changed rows / the whole region (stats, tests).
    partial_grabs: u64,
    full_grabs: u64,
}

impl X11Source {
    /// Connect to `display` (None = `$DISPLAY`). Frames come from `pool`
    /// unless a grab names another one.
    pub fn open(
        display: Option<&str>,
        choice: BackendChoice,
        pool: FramePool,
    ) -> Result<X11Source> {
        let xc = XConn::open(display)?;
        let screen = ScreenState::new(&xc)?;
        let (backend, backend_reason) = match choice {
            BackendChoice::XGetImage => (
                Backend::XGetImage,
                Some("xgetimage was requested".to_owned()),
            ),
            BackendChoice::Xshm => match shm::check_available(&xc) {
                Ok(()) => (Backend::Xshm, None),
                Err(reason) => {
                    return Err(CaptureError::BackendUnavailable {
                        backend: "xshm",
                        reason,
                    })
                }
            },
            // Auto, X11 (and nothing else reaches here): MIT-SHM when it works.
            _ => match shm::check_available(&xc) {
                Ok(()) => (Backend::Xshm, None),
                Err(reason) => (Backend::XGetImage, Some(reason)),
            },
        };
        let choice = if choice.is_x11() && choice != BackendChoice::X11 {
            choice
        } else {
            BackendChoice::Auto
        };
        Ok(X11Source {
            xc,
            screen,
            choice,
            backend,
            backend_reason,
            segments: SegmentCache::default(),
            shm_proven: false,
            cursor: CursorSource::default(),
            pool,
            seq: 0,
            damage: None,
            last_damage: None,
            partial_grabs: 0,
            full_grabs: 0,
        })
    }

    /// Say why this X11 source was chosen (an XWayland fallback).
    pub(crate) fn set_reason(&mut self, reason: String) {
        self.backend_reason = Some(reason);
    }

    /// Drain the event queue (a local, non-blocking read): RandR events to
    /// the screen state, DamageNotify to the tracker. Errors of unchecked
    /// requests (`ShmDetach`, `DamageSubtract`) are dropped here.
    fn pump(&mut self) -> Result<()> {
        while let Some(ev) = self
            .xc
            .conn
            .poll_for_event()
            .map_err(|e| CaptureError::x("reading events", e))?
        {
            self.screen.on_event(&ev);
            if let Some(d) = &mut self.damage {
                d.on_event(&ev);
            }
        }
        Ok(())
    }

    /// One round trip (a grab that copies nothing still orders the events).
    fn sync(&self) -> Result<()> {
        self.xc
            .conn
            .get_input_focus()
            .map_err(|e| CaptureError::x("GetInputFocus", e))?
            .reply()
            .map_err(|e| CaptureError::x("GetInputFocus", e))?;
        Ok(())
    }

    fn fill(
        &mut self,
        lease: &mut framebus_core::Lease,
        region: Region,
        bands: &[(u32, u32)],
    ) -> Result<()> {
        if self.backend == Backend::Xshm {
            match backend::grab_shm(
                &self.xc,
                &mut self.segments,
                lease,
                region,
                bands,
                self.shm_proven,
            ) {
                Ok(()) => {
                    self.shm_proven = true;
                    return Ok(());
                }
                Err(ShmFailure::Other(e)) => return Err(e),
                Err(ShmFailure::Unusable(reason)) => {
                    if self.choice != BackendChoice::Auto {
                        return Err(CaptureError::BackendUnavailable {
                            backend: "xshm",
                            reason,
                        });
                    }
                    self.segments.clear(&self.xc);
                    self.backend = Backend::XGetImage;
                    self.backend_reason = Some(reason);
                }
            }
        }
        backend::grab_getimage(&self.xc, lease, region, bands)
    }

    /// Copy the changed rectangles `rects` into the slot through its shared
    /// pixmap; where the server refuses one, the whole region instead.
    fn copy_rects(
        &mut self,
        lease: &mut framebus_core::Lease,
        region: Region,
        rects: &[Rect],
    ) -> Result<()> {
        if self.segments.copy_rects(&self.xc, lease, region, rects)? {
            return Ok(());
        }
        self.fill(lease, region, &[(0, region.height)])
    }
}

// The trait documents each method (source.rs).
impl Source for X11Source {
    fn backend(&self) -> Backend {
        self.backend
    }

    fn backend_reason(&self) -> Option<&str> {
        self.backend_reason.as_deref()
    }

    fn display(&self) -> &str {
        &self.xc.display
    }

    fn pool(&self) -> &FramePool {
        &self.pool
    }

    fn attached_segments(&self) -> usize {
        self.segments.len()
    }

    fn screen_size(&mut self) -> Result<(u32, u32)> {
        self.pump()?;
        self.screen.size(&self.xc)
    }

    fn monitors(&mut self) -> Result<Vec<Monitor>> {
        self.pump()?;
        self.screen.monitors(&self.xc)
    }

    fn track_damage(&mut self, incremental: bool) -> Result<()> {
        match &mut self.damage {
            Some(d) => d.incremental = incremental,
            None => self.damage = Some(DamageTracker::new(&self.xc, incremental)?),
        }
        Ok(())
    }

    fn tracks_damage(&self) -> bool {
        self.damage.is_some()
    }

    fn is_incremental(&self) -> bool {
        self.damage.as_ref().is_some_and(|d| d.incremental)
    }

    fn last_damage(&self) -> Option<&[Region]> {
        self.last_damage.as_deref()
    }

    fn grab_counts(&self) -> (u64, u64) {
        (self.partial_grabs, self.full_grabs)
    }

    #[doc(hidden)]
    fn tracked_slots(&self) -> usize {
        self.damage.as_ref().map_or(0, DamageTracker::tracked_slots)
    }

    fn changed_since_last(&mut self, region: Option<Region>) -> Result<bool> {
        self.pump()?;
        let (w, h) = self.screen.size(&self.xc)?;
        let region = region.unwrap_or(Region::new(0, 0, w, h));
        Ok(self
            .damage
            .as_ref()
            .is_none_or(|d| d.changed_since_last(region)))
    }

    fn wait_for_events(&mut self, timeout: Duration) -> Result<()> {
        use rustix::event::{poll, PollFd, PollFlags};
        use rustix::fd::AsFd;
        self.pump()?;
        let stream = self.xc.conn.stream();
        let fd = stream.as_fd();
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let ns = timeout.as_nanos().min(i64::MAX as u128) as i64;
        let ts = rustix::event::Timespec {
            tv_sec: ns / 1_000_000_000,
            tv_nsec: ns % 1_000_000_000,
        };
        // A failed or interrupted poll only ends the wait early.
        let _ = poll(&mut fds, Some(&ts));
        self.pump()
    }

    fn grab_with(
        &mut self,
        region: Option<Region>,
        with_cursor: bool,
        pool: Option<&FramePool>,
        policy: Option<Exhausted>,
    ) -> Result<Frame> {
        self.pump()?;
        let (w, h) = self.screen.size(&self.xc)?;
        let region = region.unwrap_or(Region::new(0, 0, w, h));
        // Inside a screen whose size X reports in 16 bits, so the region also
        // fits the requests' 16-bit fields.
        region.check_inside(w, h)?;
        let layout = FrameLayout::new(
            region.width as usize,
            region.height as usize,
            PixelFormat::Bgra,
            None,
        )?;
        let own_pool = pool.is_none_or(|p| p.same_pool(&self.pool));
        let pool = pool.unwrap_or(&self.pool).clone();
        let before = self.damage.as_ref().map(|_| pool.stats().acquires);
        let mut lease = match policy {
            Some(p) => pool.acquire_with(layout.byte_len(), p)?,
            None => pool.acquire(layout.byte_len())?,
        };
        // Only slots of our own pool that nobody else acquired from in
        // between still hold what we grabbed into them.
        let trusted = match (&mut self.damage, before) {
            (Some(d), Some(before)) if own_pool => d.check_pool(before, pool.stats().acquires),
            _ => false,
        };
        self.segments.sweep(&self.xc)?;
        self.pump()?;
        let timestamp = framebus_core::monotonic_ns();
        let incremental = self.damage.as_ref().is_some_and(|d| d.incremental);
        // Rectangles through the slot's shared pixmap where the server has them.
        let by_rect = incremental
            && self.backend == Backend::Xshm
            && self.segments.shared_pixmaps(&self.xc)?;
        let mut plan = match &mut self.damage {
            Some(d) if d.incremental && trusted => {
                d.plan(lease.slot_id(), &lease.slot_liveness(), region, by_rect)
            }
            _ => Plan::Full,
        };
        let partial = plan != Plan::Full;
        let start = self.damage.as_ref().map_or(0, DamageTracker::epoch);
        let mut rounds = 0;
        loop {
            rounds += 1;
            if let Some(d) = &self.damage {
                d.subtract(&self.xc)?;
            }
            let result = match &plan {
                p if p.is_empty() => self.sync(),
                Plan::Full => self.fill(&mut lease, region, &[(0, region.height)]),
                Plan::Bands(bands) => self.fill(&mut lease, region, bands),
                Plan::Rects(rects) => self.copy_rects(&mut lease, region, rects),
            };
            if let Err(e) = result {
                // The screen may have shrunk between the size check and the grab:
                // name the bounds rather than a bare X error. (The server queues its
                // ScreenChangeNotify before our error, so `size` sees the change.)
                self.pump()?;
                let (w, h) = self.screen.size(&self.xc)?;
                region.check_inside(w, h)?;
                return Err(e);
            }
            let Some(d) = &mut self.damage else { break };
            d.end_epoch();
            self.pump()?;
            let Some(d) = &mut self.damage else { break };
            if plan != Plan::Full && d.forgot_since(start) {
                // The screen changed during a partial grab (CopyArea copies
                // nothing off-screen, silently): grab in full, which checks.
                plan = Plan::Full;
                continue;
            }
            // Changes read with the reply, outside what was just copied, may
            // predate the copy: copy them too (a full round always ends it).
            match d.late(region, &plan, by_rect) {
                None => break,
                Some(_) if rounds >= damage::MAX_ROUNDS => plan = Plan::Full,
                Some(late) => plan = late,
            }
        }
        let mut cursor_rect = None;
        if with_cursor {
            let image = self.cursor.image(&self.xc)?;
            let dst = lease.get_mut().ok_or_else(|| CaptureError::X {
                op: "cursor",
                detail: "the destination slot is shared or read-only".into(),
            })?;
            cursor::composite(&image, region, &mut dst[..layout.byte_len()]);
            cursor_rect = Rect {
                x0: image.left,
                y0: image.top,
                x1: image.left + image.width as i32,
                y1: image.top + image.height as i32,
            }
            .in_frame(region);
        }
        if let Some(d) = &mut self.damage {
            if partial {
                self.partial_grabs += 1;
            } else {
                self.full_grabs += 1;
            }
            let rects = d.record(
                lease.slot_id(),
                lease.slot_liveness(),
                region,
                cursor_rect,
                own_pool,
            );
            self.last_damage = Some(rects);
        }
        self.seq += 1;
        Ok(Frame::new(lease, layout)?
            .with_meta(timestamp, self.seq)
            .into_readonly())
    }
}

impl Drop for X11Source {
    fn drop(&mut self) {
        if let Some(d) = &self.damage {
            d.destroy(&self.xc);
        }
        self.segments.clear(&self.xc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// A private Xvfb (the server picks the display number: -displayfd), or None.
    fn xvfb() -> Option<(std::process::Child, String)> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let (r, w) = rustix::pipe::pipe().ok()?;
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", &w.as_raw_fd().to_string()])
            .args(["-screen", "0", "64x48x24", "-noreset"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?; // not installed: skip
        drop(w);
        let mut f = std::fs::File::from(r);
        let mut num = String::new();
        let mut byte = [0u8; 1];
        while f.read(&mut byte).ok()? == 1 && byte[0] != b'\n' {
            num.push(byte[0] as char);
        }
        if num.trim().is_empty() {
            let _ = child.kill();
            return None;
        }
        Some((child, format!(":{}", num.trim())))
    }

    #[test]
    fn a_failing_shm_get_image_switches_to_xgetimage_once_with_the_reason() {
        let Some((mut server, display)) = xvfb() else {
            eprintln!("Xvfb is not installed: skipping");
            return;
        };
        let mut g = X11Source::open(Some(&display), BackendChoice::Auto, FramePool::default())
            .expect("open");
        let r = Region::new(0, 0, 16, 16);
        let slot = g
            .grab_with(Some(r), false, None, None)
            .unwrap()
            .lease()
            .slot_id();
        // The slot is free again; the next grab reuses it with a bogus segment,
        // as if the server refused SHM before any grab had succeeded.
        g.segments.corrupt(slot);
        g.shm_proven = false;
        let f = g.grab_with(Some(r), false, None, None).unwrap();
        assert_eq!(f.lease().slot_id(), slot);
        assert_eq!(g.backend(), Backend::XGetImage);
        let reason = g.backend_reason().unwrap().to_owned();
        assert!(reason.starts_with("ShmGetImage failed: "), "{reason}");
        assert_eq!(g.attached_segments(), 0, "segments detached on the switch");
        // Switched once: later grabs stay on XGetImage with the same reason.
        g.grab_with(Some(r), false, None, None).unwrap();
        assert_eq!(g.backend_reason(), Some(reason.as_str()));
        let _ = server.kill();
        let _ = server.wait();
    }

    /// Grab `g` and a fresh full grab of the same screen; their B, G, R bytes
    /// must be equal (a depth-24 screen leaves the 4th byte undefined).
    fn assert_same_as_full(g: &mut X11Source, display: &str) {
        let f = g.grab_with(None, false, None, None).unwrap();
        let mut reference =
            X11Source::open(Some(display), BackendChoice::Auto, FramePool::default()).unwrap();
        let want = reference.grab_with(None, false, None, None).unwrap();
        let n = f.byte_len();
        assert_eq!(n, want.byte_len());
        // SAFETY: both frames are read-only and finished: no X request of ours
        // writes into their slots any more, and nobody else holds them.
        let (a, b) = unsafe { (&f.lease().as_slice()[..n], &want.lease().as_slice()[..n]) };
        for (i, (p, q)) in a.chunks(4).zip(b.chunks(4)).enumerate() {
            assert_eq!(p[..3], q[..3], "pixel {i} differs");
        }
    }

    #[test]
    fn incremental_grabs_copy_rectangles_through_the_slots_pixmap_or_fall_back() {
        let Some((mut server, display)) = xvfb() else {
            eprintln!("Xvfb is not installed: skipping");
            return;
        };
        let d = Some(display.as_str());
        let noise: Vec<u8> = (0..64 * 48 * 4).map(|i| (i * 7 % 251) as u8).collect();
        crate::testing::put_image(d, Region::new(0, 0, 64, 48), &noise).unwrap();
        let mut g = X11Source::open(d, BackendChoice::Auto, FramePool::default()).unwrap();
        g.track_damage(true).unwrap();
        drop(g.grab_with(None, false, None, None).unwrap()); // full: a fresh slot
        assert!(
            g.segments.shared_pixmaps(&g.xc).unwrap(),
            "Xvfb lends pixmaps"
        );
        for (i, refuse) in [false, false, true, false].into_iter().enumerate() {
            if refuse {
                // As if the server refused shared pixmaps: rows instead.
                g.segments.refuse_pixmaps();
            }
            let patch = vec![40 * i as u8 + 3; 5 * 7 * 4];
            crate::testing::put_image(d, Region::new(10 + i as i32, 20, 5, 7), &patch).unwrap();
            assert_same_as_full(&mut g, &display);
        }
        let (partial, full) = g.grab_counts();
        assert_eq!((partial, full), (4, 1));
        assert!(
            !g.segments.shared_pixmaps(&g.xc).unwrap(),
            "refused stays off"
        );
        let _ = server.kill();
        let _ = server.wait();
    }
}
