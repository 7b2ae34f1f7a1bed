//! `Grabber`: the one public capture handle, on any display server.
//!
//! Picks a [`Source`] once, when it opens, and forwards to it:
//!
//! ```text
//!  display given ─ contains ':' ─▶ X11 ("host:N.S")    otherwise ─▶ Wayland socket
//!  display None  ─ backend names a platform ─▶ that platform's variable
//!                └ auto: $WAYLAND_DISPLAY ─▶ Wayland, else $DISPLAY ─▶ X11,
//!                        else an error naming both
//!  Wayland: ext-image-copy, then wlr-screencopy (the first the compositor
//!           advertises), then the ScreenCast portal; under auto, X11 last
//!           when $DISPLAY is set too (XWayland)
//!  X11:     MIT-SHM, else XGetImage (see `x11`)
//! ```
//!
//! `backend()` and `backend_reason()` say what was chosen and why; when
//! nothing works the error names every backend tried and why each failed.

use crate::connection::non_empty_env;
use crate::source::Source;
use crate::x11::X11Source;
use crate::{Backend, BackendChoice, CaptureError, Monitor, PortalOptions, Region, Result, Target};
use framebus_core::{Exhausted, Frame, FramePool};
use std::time::Duration;

/// Where a grabber connects: an X display or a Wayland socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisplayTarget {
    /// An X display name (`[host]:N[.S]`).
    X11(String),
    /// A Wayland socket: a name under `$XDG_RUNTIME_DIR` or an absolute path.
    Wayland(String),
}

impl DisplayTarget {
    /// The name as given.
    pub fn name(&self) -> &str {
        match self {
            DisplayTarget::X11(n) | DisplayTarget::Wayland(n) => n,
        }
    }

    /// Classify a display name: X display names always contain ':'
    /// (`:0`, `host:1.0`), Wayland socket names and paths never need one.
    pub fn parse(name: &str) -> DisplayTarget {
        if name.contains(':') {
            DisplayTarget::X11(name.to_owned())
        } else {
            DisplayTarget::Wayland(name.to_owned())
        }
    }
}

/// Which display server `display` (None = the environment) and `choice`
/// mean. Neither a display nor the variable the choice needs is
/// [`CaptureError::NoDisplay`], naming both variables.
pub fn resolve_target(display: Option<&str>, choice: BackendChoice) -> Result<DisplayTarget> {
    resolve_target_from(
        display,
        choice,
        non_empty_env("WAYLAND_DISPLAY"),
        non_empty_env("DISPLAY"),
    )
}

/// [`resolve_target`] over given environment values (for tests).
pub(crate) fn resolve_target_from(
    display: Option<&str>,
    choice: BackendChoice,
    wayland_env: Option<String>,
    display_env: Option<String>,
) -> Result<DisplayTarget> {
    let no_display = || CaptureError::NoDisplay {
        wayland_display: wayland_env.clone(),
        display: display_env.clone(),
        backend: choice,
    };
    if let Some(name) = display.filter(|d| !d.is_empty()) {
        let target = DisplayTarget::parse(name);
        return match (&target, choice.is_x11(), choice.is_wayland()) {
            (DisplayTarget::X11(_), false, true) | (DisplayTarget::Wayland(_), true, false) => {
                Err(CaptureError::BadArgument(format!(
                    "display {name:?} is {} but backend {choice} is for {}",
                    match target {
                        DisplayTarget::X11(_) => "an X display (it contains ':')",
                        DisplayTarget::Wayland(_) => "a Wayland socket (it has no ':')",
                    },
                    if choice.is_x11() { "X11" } else { "Wayland" }
                )))
            }
            _ => Ok(target),
        };
    }
    if choice == BackendChoice::Portal {
        // The portal is reached over D-Bus; the socket only names the session.
        return Ok(DisplayTarget::Wayland(
            wayland_env.clone().unwrap_or_else(|| "portal".to_owned()),
        ));
    }
    let wayland = || wayland_env.clone().map(DisplayTarget::Wayland);
    let x11 = || display_env.clone().map(DisplayTarget::X11);
    let found = if choice.is_x11() {
        x11()
    } else if choice.is_wayland() {
        wayland()
    } else {
        wayland().or_else(x11)
    };
    found.ok_or_else(no_display)
}

/// A connection to one display that grabs into pool slots. Not `Sync`: use
/// one per thread, or a mutex (the Python bindings do).
pub struct Grabber {
    source: Box<dyn Source>,
}

impl Grabber {
    /// Connect to `display` (None = the environment, see [`resolve_target`])
    /// with the backend `choice`. Frames come from `pool` unless a grab names
    /// another one.
    pub fn open(display: Option<&str>, choice: BackendChoice, pool: FramePool) -> Result<Grabber> {
        Grabber::open_with(display, choice, pool, &PortalOptions::default())
    }

    /// [`Grabber::open`] with what to ask the ScreenCast portal for, should
    /// the portal be the backend. Window sources only the portal can give:
    /// asking for them makes `auto` and `wayland` choose the portal, and is
    /// [`CaptureError::BadArgument`] with any other backend.
    pub fn open_with(
        display: Option<&str>,
        choice: BackendChoice,
        pool: FramePool,
        portal: &PortalOptions,
    ) -> Result<Grabber> {
        let choice = match choice {
            c if !portal.windows || c == BackendChoice::Portal => c,
            BackendChoice::Auto | BackendChoice::Wayland => BackendChoice::Portal,
            c => {
                return Err(CaptureError::BadArgument(format!(
                    "window sources come only from the ScreenCast portal: backend {:?} \
                     cannot share a window (use backend=\"portal\" or \"auto\")",
                    c.name()
                )))
            }
        };
        let target = resolve_target(display, choice)?;
        let mut tried: Vec<(&'static str, String)> = Vec::new();
        if let DisplayTarget::Wayland(socket) = &target {
            match crate::wayland::open(socket, choice, pool.clone(), portal, &mut tried) {
                Ok(source) => return Ok(Grabber { source }),
                Err(e) if tried.is_empty() => return Err(e),
                Err(_) => {}
            }
            // Under auto, an XWayland display is the last resort.
            let x_display = non_empty_env("DISPLAY");
            if let (BackendChoice::Auto, Some(x)) = (choice, x_display) {
                match X11Source::open(Some(&x), BackendChoice::Auto, pool) {
                    Ok(mut source) => {
                        source.set_reason(format!(
                            "no Wayland backend works on {socket:?} ({}); capturing \
                             XWayland display {x:?}, which shows X clients only",
                            describe_tried(&tried)
                        ));
                        return Ok(Grabber {
                            source: Box::new(source),
                        });
                    }
                    Err(e) => tried.push(("x11", e.to_string())),
                }
            }
            return Err(CaptureError::NoBackend {
                display: socket.clone(),
                tried: describe_tried(&tried),
            });
        }
        let x_choice = match choice {
            BackendChoice::X11 => BackendChoice::Auto,
            c => c,
        };
        let source = X11Source::open(Some(target.name()), x_choice, pool)?;
        Ok(Grabber {
            source: Box::new(source),
        })
    }

    /// Start keeping each frame's changed rectangles
    /// ([`Grabber::last_damage`]); with `incremental`, a grab into a slot
    /// this grabber filled before refreshes only what changed since (X11:
    /// XDamage row bands; ext-image-copy: buffer damage). Calling it again
    /// switches `incremental`. [`CaptureError::BackendUnavailable`] where the
    /// server cannot report damage.
    pub fn track_damage(&mut self, incremental: bool) -> Result<()> {
        self.source.track_damage(incremental)
    }

    /// True once [`Grabber::track_damage`] succeeded.
    pub fn tracks_damage(&self) -> bool {
        self.source.tracks_damage()
    }

    /// True while grabs copy only what changed.
    pub fn is_incremental(&self) -> bool {
        self.source.is_incremental()
    }

    /// The rectangles (frame coordinates) that changed between the previous
    /// frame of this grabber and the last one: a superset of the pixels that
    /// differ (the whole frame for the first frame, after a screen change, or
    /// when the region changed). None unless damage is tracked.
    pub fn last_damage(&self) -> Option<&[Region]> {
        self.source.last_damage()
    }

    /// (partial, full) grabs since the grabber opened, counted while damage is
    /// tracked: a partial grab copied only the rows that changed.
    pub fn grab_counts(&self) -> (u64, u64) {
        self.source.grab_counts()
    }

    /// Slots whose pixels the damage tracker vouches for (tests).
    #[doc(hidden)]
    pub fn tracked_slots(&self) -> usize {
        self.source.tracked_slots()
    }

    /// True when the events read so far show a change inside `region` (None
    /// = the screen) since the last frame, or when nothing can be known.
    pub fn changed_since_last(&mut self, region: Option<Region>) -> Result<bool> {
        self.source.changed_since_last(region)
    }

    /// Wait up to `timeout` for the server to send anything (an event), so
    /// a capture that only wants changes need not spin.
    pub fn wait_for_events(&mut self, timeout: Duration) -> Result<()> {
        self.source.wait_for_events(timeout)
    }

    /// Wait up to `timeout` for `region` to change and grab it then; None
    /// when nothing changed in time (continuous capture with `on_change`).
    pub fn grab_when_changed(
        &mut self,
        region: Region,
        with_cursor: bool,
        pool: Option<&FramePool>,
        policy: Option<Exhausted>,
        timeout: Duration,
    ) -> Result<Option<Frame>> {
        self.source
            .grab_when_changed(region, with_cursor, pool, policy, timeout)
    }

    /// The backend in use now.
    pub fn backend(&self) -> Backend {
        self.source.backend()
    }

    /// Why this backend was chosen over a preferred one (None when it is
    /// the first choice).
    pub fn backend_reason(&self) -> Option<&str> {
        self.source.backend_reason()
    }

    /// The display (X name or Wayland socket) this grabber connected to.
    pub fn display(&self) -> &str {
        self.source.display()
    }

    /// The pool frames come from by default.
    pub fn pool(&self) -> &FramePool {
        self.source.pool()
    }

    /// Server-side resources attached to slots right now (MIT-SHM segments,
    /// wl_shm pools): one per live slot grabbed into.
    pub fn attached_segments(&self) -> usize {
        self.source.attached_segments()
    }

    /// The size of the whole desktop now (follows resizes, outputs added).
    pub fn screen_size(&mut self) -> Result<(u32, u32)> {
        self.source.screen_size()
    }

    /// Monitors now: index 0 = the whole desktop, then each monitor.
    pub fn monitors(&mut self) -> Result<Vec<Monitor>> {
        self.source.monitors()
    }

    /// The region of monitor `index` (0 = whole desktop).
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

    /// Grab `region` (None = whole desktop) into a slot of `pool` (None =
    /// this grabber's pool), blending the cursor in when `with_cursor`.
    pub fn grab(
        &mut self,
        region: Option<Region>,
        with_cursor: bool,
        pool: Option<&FramePool>,
    ) -> Result<Frame> {
        self.source.grab_with(region, with_cursor, pool, None)
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
        self.source.grab_with(region, with_cursor, pool, policy)
    }
}

/// "name: reason; name: reason" for an error message.
fn describe_tried(tried: &[(&'static str, String)]) -> String {
    tried
        .iter()
        .map(|(name, why)| format!("{name}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn display_names_with_a_colon_are_x11_others_wayland() {
        use DisplayTarget::*;
        let r = |d, c| resolve_target_from(d, c, None, None);
        assert_eq!(
            r(Some(":1"), BackendChoice::Auto).unwrap(),
            X11(":1".into())
        );
        assert_eq!(
            r(Some("host:0.1"), BackendChoice::Auto).unwrap(),
            X11("host:0.1".into())
        );
        assert_eq!(
            r(Some("wayland-1"), BackendChoice::Auto).unwrap(),
            Wayland("wayland-1".into())
        );
        assert_eq!(
            r(Some("/run/user/1000/wayland-0"), BackendChoice::Auto).unwrap(),
            Wayland("/run/user/1000/wayland-0".into())
        );
        let e = r(Some(":1"), BackendChoice::WlrScreencopy).unwrap_err();
        assert!(e.to_string().contains("\":1\" is an X display"), "{e}");
        let e = r(Some("wayland-1"), BackendChoice::Xshm).unwrap_err();
        assert!(e.to_string().contains("is a Wayland socket"), "{e}");
    }

    #[test]
    fn the_environment_prefers_wayland_and_names_both_variables_when_empty() {
        use DisplayTarget::*;
        let r = |c, w, x| resolve_target_from(None, c, w, x);
        assert_eq!(
            r(BackendChoice::Auto, s("wayland-1"), s(":0")).unwrap(),
            Wayland("wayland-1".into())
        );
        assert_eq!(
            r(BackendChoice::Auto, None, s(":0")).unwrap(),
            X11(":0".into())
        );
        assert_eq!(
            r(BackendChoice::Xshm, s("wayland-1"), s(":0")).unwrap(),
            X11(":0".into())
        );
        assert_eq!(
            r(BackendChoice::Wayland, s("wayland-1"), s(":0")).unwrap(),
            Wayland("wayland-1".into())
        );
        let e = r(BackendChoice::Auto, None, None).unwrap_err().to_string();
        assert!(
            e.contains("$DISPLAY") && e.contains("$WAYLAND_DISPLAY"),
            "{e}"
        );
        let e = r(BackendChoice::WlrScreencopy, None, s(":0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("$WAYLAND_DISPLAY"), "{e}");
    }

    #[test]
    fn window_sources_need_the_portal_and_bad_source_names_are_named() {
        let windows = PortalOptions::default().with_sources("window").unwrap();
        assert!(windows.windows && !windows.monitors);
        let any = PortalOptions::default().with_sources("ANY").unwrap();
        assert!(any.windows && any.monitors);
        let e = PortalOptions::default().with_sources("tab").unwrap_err();
        assert!(e.is_bad_input() && e.to_string().contains("\"tab\""), "{e}");
        for backend in [
            BackendChoice::X11,
            BackendChoice::Xshm,
            BackendChoice::WlrScreencopy,
            BackendChoice::ExtImageCopy,
        ] {
            let e = Grabber::open_with(Some(":99"), backend, FramePool::default(), &windows)
                .err()
                .expect("a window from a non-portal backend");
            let msg = e.to_string();
            assert!(e.is_bad_input(), "{msg}");
            assert!(
                msg.contains(backend.name()) && msg.contains("portal"),
                "{msg}"
            );
        }
    }
}
