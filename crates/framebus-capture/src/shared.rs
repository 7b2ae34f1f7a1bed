//! What to grab ([`Target`]) and the reconnecting shared grabber behind
//! one-shot grabs ([`SharedGrabber`], [`grab_shared`]).
//!
//! ```text
//!  grab_shared(display, target, …) ──▶ PROCESS: SharedGrabber (Auto backend)
//!     display: argument, else $WAYLAND_DISPLAY / $DISPLAY (resolve_target)
//!     ├─ no grabber yet, or one for another display ─▶ Grabber::open
//!     ├─ target.resolve (monitor index → its region now) ─▶ Grabber::grab
//!     └─ X error (server gone, restarted…) ─▶ drop the connection; if it was an
//!        old one, reconnect once and retry, else return the error
//! ```
//!
//! The policy lives here, not in the bindings, so `framebus.grab()` and any
//! other front-end are one call. Depends on `grabber` and `connection`.

use crate::grabber::resolve_target;
use crate::{BackendChoice, CaptureError, Grabber, Region, Result};
use framebus_core::{Frame, FramePool};
use std::sync::{Mutex, MutexGuard};

/// What a grab asks for: the whole screen, one monitor, or a rectangle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Target {
    /// The whole screen (its size read at grab time).
    #[default]
    Screen,
    /// Monitor `i` of [`Grabber::monitors`]: 0 = the whole screen (all
    /// monitors, as mss numbers them), 1.. = each RandR monitor.
    Monitor(usize),
    /// A rectangle in root-window coordinates.
    Rect(Region),
}

impl From<Region> for Target {
    fn from(r: Region) -> Self {
        Target::Rect(r)
    }
}

impl Target {
    /// The region to hand to [`Grabber::grab`]: None for the whole screen, the
    /// monitor's region as it is now (one round trip; a missing index is
    /// [`CaptureError::BadMonitor`]), or the rectangle.
    pub fn resolve(self, g: &mut Grabber) -> Result<Option<Region>> {
        match self {
            Target::Screen => Ok(None),
            Target::Monitor(i) => g.monitor_region(i).map(Some),
            Target::Rect(r) => Ok(Some(r)),
        }
    }
}

/// One grabber shared by callers that grab now and then (`framebus.grab()`):
/// opened on first use, reopened when another display is asked for, and
/// reconnected when the X connection fails. Callers serialize on its mutex,
/// held for the whole grab (one X connection cannot be used by two threads
/// at once).
pub struct SharedGrabber {
    grabber: Mutex<Option<Grabber>>,
    choice: BackendChoice,
}

impl SharedGrabber {
    /// A shared grabber that connects on first use with `choice`.
    /// `const`, so it can be a `static`.
    pub const fn new(choice: BackendChoice) -> SharedGrabber {
        SharedGrabber {
            grabber: Mutex::new(None),
            choice,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Grabber>> {
        self.grabber.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Grab `target` from `display` (None = `$DISPLAY`; neither is
    /// [`CaptureError::NoDisplay`]) into a slot of `pool`, or of
    /// `default_pool` when `pool` is None, blending the cursor in when
    /// `cursor`.
    ///
    /// Connects when there is no connection yet or it is to another display.
    /// An X error ([`CaptureError::X`]: the server went away, was restarted,
    /// refused a request) drops the connection; if that connection was an old
    /// one, this reconnects once and retries, so a restarted server is
    /// transparent. Bad input (a region off the screen, a missing monitor)
    /// keeps the connection.
    pub fn grab(
        &self,
        display: Option<&str>,
        target: Target,
        cursor: bool,
        pool: Option<&FramePool>,
        default_pool: FramePool,
    ) -> Result<Frame> {
        let name = resolve_target(display, self.choice)?.name().to_owned();
        let pool = pool.unwrap_or(&default_pool);
        let mut slot = self.lock();
        let reused = slot.as_ref().is_some_and(|g| g.display() == name);
        if !reused {
            *slot = None; // close the old connection before opening another
        }
        for attempt in 0..2 {
            let g = match slot.take() {
                Some(g) => slot.insert(g),
                None => slot.insert(Grabber::open(
                    Some(&name),
                    self.choice,
                    default_pool.clone(),
                )?),
            };
            let result = target
                .resolve(g)
                .and_then(|r| g.grab(r, cursor, Some(pool)));
            match result {
                Err(CaptureError::X { .. } | CaptureError::Wayland { .. })
                    if reused && attempt == 0 =>
                {
                    *slot = None; // maybe the server restarted: one fresh try
                }
                Err(e @ (CaptureError::X { .. } | CaptureError::Wayland { .. })) => {
                    *slot = None; // reconnect on the next call
                    return Err(e);
                }
                r => return r,
            }
        }
        unreachable!("the second attempt always returns")
    }

    /// The display of the open connection, if any.
    pub fn display(&self) -> Option<String> {
        self.lock().as_ref().map(|g| g.display().to_owned())
    }

    /// Close the connection (the next grab reconnects). Frames already
    /// grabbed stay valid.
    pub fn close(&self) {
        let g = self.lock().take();
        drop(g);
    }
}

/// The process-wide shared grabber behind [`grab_shared`].
static PROCESS: SharedGrabber = SharedGrabber::new(BackendChoice::Auto);

/// Grab once through the process-wide [`SharedGrabber`] (backend `Auto`):
/// `framebus.grab()`. See [`SharedGrabber::grab`] for the display lookup,
/// reconnects and errors.
pub fn grab_shared(
    display: Option<&str>,
    target: Target,
    cursor: bool,
    pool: Option<&FramePool>,
    default_pool: FramePool,
) -> Result<Frame> {
    PROCESS.grab(display, target, cursor, pool, default_pool)
}

/// Close the process-wide shared grabber's connection (e.g. before `fork`,
/// or at interpreter exit); the next [`grab_shared`] reconnects.
pub fn close_shared() {
    PROCESS.close();
}
