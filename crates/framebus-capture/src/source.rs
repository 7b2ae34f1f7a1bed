//! `Source`: what every capture backend gives the [`crate::Grabber`].
//!
//! One trait, implemented by the X11 source (`x11`: MIT-SHM / XGetImage)
//! and the Wayland sources (`wayland`: ext-image-copy-capture,
//! wlr-screencopy; `portal`: the ScreenCast portal through PipeWire). The
//! `Grabber` picks one (see `grabber`), and everything above it — one-shot
//! grabs, continuous capture, the bindings, the CLI — talks to this trait
//! only, so they behave the same on every display server.
//!
//! Coordinates are the desktop's: X11 root-window pixels; on Wayland the
//! compositor's layout (see docs/wayland.md for scaled outputs). Frames are
//! BGRA, read-only, stamped with `CLOCK_MONOTONIC` ns and a per-source
//! sequence number.

use crate::{Backend, Monitor, Region, Result};
use framebus_core::{Exhausted, Frame, FramePool};
use std::time::Duration;

/// A connection to a display server that grabs into pool slots. Not `Sync`:
/// one thread at a time (the `Grabber` is used behind a mutex where shared).
pub(crate) trait Source: Send {
    /// The backend in use now.
    fn backend(&self) -> Backend;

    /// Why this backend and not a preferred one (None when it was the first
    /// choice and nothing needs saying).
    fn backend_reason(&self) -> Option<&str>;

    /// The display this source is connected to (X display name, Wayland
    /// socket, or "portal").
    fn display(&self) -> &str;

    /// The pool frames come from by default.
    fn pool(&self) -> &FramePool;

    /// The size of the whole desktop now (monitor 0).
    fn screen_size(&mut self) -> Result<(u32, u32)>;

    /// Monitors now: index 0 = the whole desktop, then one per monitor.
    fn monitors(&mut self) -> Result<Vec<Monitor>>;

    /// Grab `region` (None = the whole desktop) into a slot of `pool` (None =
    /// the source's pool), overriding the pool's policy at its limit with
    /// `policy`, blending the cursor in when `with_cursor`.
    fn grab_with(
        &mut self,
        region: Option<Region>,
        with_cursor: bool,
        pool: Option<&FramePool>,
        policy: Option<Exhausted>,
    ) -> Result<Frame>;

    /// Start keeping each frame's changed rectangles; `incremental` also
    /// asks the source to refresh a reused slot only where it is stale
    /// (where the backend can). Calling it again switches `incremental`.
    fn track_damage(&mut self, incremental: bool) -> Result<()>;

    /// True once [`Source::track_damage`] succeeded.
    fn tracks_damage(&self) -> bool;

    /// True while grabs refresh only what changed.
    fn is_incremental(&self) -> bool;

    /// The rectangles (frame coordinates) that changed between the previous
    /// frame and the last one: a superset of the pixels that differ. None
    /// unless damage is tracked.
    fn last_damage(&self) -> Option<&[Region]>;

    /// (partial, full) grabs while damage is tracked.
    fn grab_counts(&self) -> (u64, u64) {
        (0, 0)
    }

    /// True when something inside `region` may have changed since the last
    /// frame (always true when nothing can be known). Does not block.
    fn changed_since_last(&mut self, region: Option<Region>) -> Result<bool>;

    /// Wait up to `timeout` for news from the server (events, damage).
    fn wait_for_events(&mut self, timeout: Duration) -> Result<()>;

    /// Wait up to `timeout` for `region` to change, then grab it; None when
    /// nothing changed in time. The default asks
    /// [`Source::changed_since_last`], waits for events once, and grabs;
    /// a source whose server can deliver "the next changed frame" itself
    /// (wlr-screencopy's `copy_with_damage`) overrides it.
    fn grab_when_changed(
        &mut self,
        region: Region,
        with_cursor: bool,
        pool: Option<&FramePool>,
        policy: Option<Exhausted>,
        timeout: Duration,
    ) -> Result<Option<Frame>> {
        if !self.changed_since_last(Some(region))? {
            self.wait_for_events(timeout)?;
            if !self.changed_since_last(Some(region))? {
                return Ok(None);
            }
        }
        self.grab_with(Some(region), with_cursor, pool, policy)
            .map(Some)
    }

    /// Server-side resources attached to slots right now (MIT-SHM segments,
    /// wl_shm pools), one per live slot grabbed into.
    fn attached_segments(&self) -> usize {
        0
    }

    /// Slots whose pixels the damage tracker vouches for (tests).
    fn tracked_slots(&self) -> usize {
        0
    }
}
