//! `Grabber`: one X connection that grabs regions into pool slots.
//!
//! Ties the modules together: validates the region against the current
//! screen (`monitors`), leases a slot sized to the region from the caller's
//! pool, fills it with the active backend (`backend`), optionally blends the
//! cursor in (`cursor`), and returns a read-only BGRA [`Frame`] stamped with
//! the capture time (`CLOCK_MONOTONIC` ns, taken just before the request is
//! sent) and a per-grabber sequence number.
//!
//! Backend switching happens here, once: `Auto` starts on MIT-SHM when the
//! server offers it on a local socket, and moves to XGetImage for good the
//! first time the SHM machinery itself fails, recording why. A bad region is
//! checked before any X request and never causes a switch.

use crate::backend::{self, Backend, BackendChoice, ShmFailure};
use crate::connection::XConn;
use crate::cursor::{self, CursorSource};
use crate::monitors::{Monitor, ScreenState};
use crate::shm::{self, SegmentCache};
use crate::{CaptureError, Region, Result, Target};
use framebus_core::{Exhausted, Frame, FrameLayout, FramePool, PixelFormat};

/// A connection to one X display that grabs into pool slots. Not `Sync`: use
/// one per thread, or a mutex (the Python bindings do).
pub struct Grabber {
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
}

impl Grabber {
    /// Connect to `display` (None = `$DISPLAY`). Frames come from `pool`
    /// unless a grab names another one.
    pub fn open(display: Option<&str>, choice: BackendChoice, pool: FramePool) -> Result<Grabber> {
        let xc = XConn::open(display)?;
        let screen = ScreenState::new(&xc)?;
        let (backend, backend_reason) = match choice {
            BackendChoice::XGetImage => (
                Backend::XGetImage,
                Some("xgetimage was requested".to_owned()),
            ),
            BackendChoice::Xshm | BackendChoice::Auto => match shm::check_available(&xc) {
                Ok(()) => (Backend::Xshm, None),
                Err(reason) if choice == BackendChoice::Auto => (Backend::XGetImage, Some(reason)),
                Err(reason) => {
                    return Err(CaptureError::BackendUnavailable {
                        backend: "xshm",
                        reason,
                    })
                }
            },
        };
        Ok(Grabber {
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
        })
    }

    /// The backend in use now.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why the backend is not MIT-SHM (None while it is).
    pub fn backend_reason(&self) -> Option<&str> {
        self.backend_reason.as_deref()
    }

    /// The display name this grabber connected to.
    pub fn display(&self) -> &str {
        &self.xc.display
    }

    /// The pool frames come from by default.
    pub fn pool(&self) -> &FramePool {
        &self.pool
    }

    /// MIT-SHM segments attached right now (one per live slot grabbed into).
    pub fn attached_segments(&self) -> usize {
        self.segments.len()
    }

    /// The screen size now (follows RandR resizes).
    pub fn screen_size(&mut self) -> Result<(u32, u32)> {
        self.screen.size(&self.xc)
    }

    /// Monitors now: index 0 = the whole screen, then each RandR monitor.
    pub fn monitors(&mut self) -> Result<Vec<Monitor>> {
        self.screen.monitors(&self.xc)
    }

    /// The region of monitor `index` (0 = whole screen).
    pub fn monitor_region(&mut self, index: usize) -> Result<Region> {
        let monitors = self.monitors()?;
        monitors
            .get(index)
            .map(Monitor::region)
            .ok_or(CaptureError::BadMonitor {
                index,
                count: monitors.len(),
            })
    }

    /// Grab `region` (None = whole screen) into a slot of `pool` (None = this
    /// grabber's pool), blending the cursor in when `with_cursor`.
    pub fn grab(
        &mut self,
        region: Option<Region>,
        with_cursor: bool,
        pool: Option<&FramePool>,
    ) -> Result<Frame> {
        self.grab_with(region, with_cursor, pool, None)
    }

    /// Grab a [`Target`] (the screen, monitor `i` as it is now, or a rectangle).
    pub fn grab_target(
        &mut self,
        target: Target,
        with_cursor: bool,
        pool: Option<&FramePool>,
    ) -> Result<Frame> {
        let region = target.resolve(self)?;
        self.grab(region, with_cursor, pool)
    }

    /// As [`Grabber::grab`], overriding the pool's policy at its limit (the
    /// capture thread waits in short steps so it can notice `stop()`).
    pub fn grab_with(
        &mut self,
        region: Option<Region>,
        with_cursor: bool,
        pool: Option<&FramePool>,
        policy: Option<Exhausted>,
    ) -> Result<Frame> {
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
        let pool = pool.unwrap_or(&self.pool);
        let mut lease = match policy {
            Some(p) => pool.acquire_with(layout.byte_len(), p)?,
            None => pool.acquire(layout.byte_len())?,
        };
        self.segments.sweep(&self.xc)?;
        let timestamp = framebus_core::monotonic_ns();
        let result = self.fill(&mut lease, region);
        if let Err(e) = result {
            // The screen may have shrunk between the size check and the grab:
            // name the bounds rather than a bare X error. (The server queues its
            // ScreenChangeNotify before our error, so `size` sees the change.)
            let (w, h) = self.screen.size(&self.xc)?;
            region.check_inside(w, h)?;
            return Err(e);
        }
        if with_cursor {
            let image = self.cursor.image(&self.xc)?;
            let dst = lease.get_mut().ok_or_else(|| CaptureError::X {
                op: "cursor",
                detail: "the destination slot is shared or read-only".into(),
            })?;
            cursor::composite(&image, region, &mut dst[..layout.byte_len()]);
        }
        self.seq += 1;
        Ok(Frame::new(lease, layout)?
            .with_meta(timestamp, self.seq)
            .into_readonly())
    }

    fn fill(&mut self, lease: &mut framebus_core::Lease, region: Region) -> Result<()> {
        if self.backend == Backend::Xshm {
            match backend::grab_shm(&self.xc, &mut self.segments, lease, region, self.shm_proven) {
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
        backend::grab_getimage(&self.xc, lease, region)
    }
}

impl Drop for Grabber {
    fn drop(&mut self) {
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
        let mut g =
            Grabber::open(Some(&display), BackendChoice::Auto, FramePool::default()).expect("open");
        let r = Region::new(0, 0, 16, 16);
        let slot = g.grab(Some(r), false, None).unwrap().lease().slot_id();
        // The slot is free again; the next grab reuses it with a bogus segment,
        // as if the server refused SHM before any grab had succeeded.
        g.segments.corrupt(slot);
        g.shm_proven = false;
        let f = g.grab(Some(r), false, None).unwrap();
        assert_eq!(f.lease().slot_id(), slot);
        assert_eq!(g.backend(), Backend::XGetImage);
        let reason = g.backend_reason().unwrap().to_owned();
        assert!(reason.starts_with("ShmGetImage failed: "), "{reason}");
        assert_eq!(g.attached_segments(), 0, "segments detached on the switch");
        // Switched once: later grabs stay on XGetImage with the same reason.
        g.grab(Some(r), false, None).unwrap();
        assert_eq!(g.backend_reason(), Some(reason.as_str()));
        let _ = server.kill();
        let _ = server.wait();
    }
}
