//! Monitors from RandR and the screen size, kept current without recreating
//! the grabber.
//!
//! * [`Monitor`] list: index 0 is the whole root window (the bounding box of
//!   every monitor, as mss reports it), then one entry per RandR ≥ 1.5 monitor
//!   (`RRGetMonitors`, active ones) with its name and primary flag. Without
//!   RandR 1.5 the list is just the root.
//! * The root size is cached and re-read whenever a RandR `ScreenChangeNotify`
//!   arrives (we select it on the root window); the grabber drains the event
//!   queue (a local, non-blocking read) before each use and hands every event
//!   to [`ScreenState::on_event`].
//!
//! Used by `backend` (region checks) and the `Grabber`; depends on `connection`.

use crate::connection::XConn;
use crate::{CaptureError, Region, Result};
use std::collections::HashMap;
use x11rb::protocol::randr::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{self, ConnectionExt as _};
use x11rb::protocol::Event;

/// One monitor (or, at index 0, the whole screen).
#[derive(Clone, Debug, PartialEq)]
pub struct Monitor {
    pub left: i32,
    pub top: i32,
    pub width: u32,
    pub height: u32,
    /// RandR monitor name (e.g. "screen", "DP-1", a `--setmonitor` name); "all" at index 0.
    pub name: String,
    /// Name of the monitor's first output, if it has outputs.
    pub output: Option<String>,
    /// RandR's primary flag (false at index 0; false on Wayland, which has none).
    pub primary: bool,
    /// The compositor's description of the output (Wayland), e.g. the make
    /// and model.
    pub description: Option<String>,
    /// Physical pixels per logical pixel (1.5 under a fractional scale of
    /// 1.5; from the mode and the xdg-output logical size on Wayland; 1 on X11).
    pub scale: f64,
    /// The output's `wl_output.transform` (0 = normal; 0 on X11).
    pub transform: u32,
    /// The size in physical pixels (the output's mode; on X11 the same as
    /// width × height, which are root-window pixels).
    pub physical: (u32, u32),
}

impl Monitor {
    pub fn region(&self) -> Region {
        Region::new(self.left, self.top, self.width, self.height)
    }
}

/// Screen geometry state for one connection.
pub(crate) struct ScreenState {
    randr_monitors: bool,
    size: Option<(u32, u32)>,
    atom_names: HashMap<xproto::Atom, String>,
    output_names: HashMap<randr::Output, String>,
}

impl ScreenState {
    /// Learn whether RandR ≥ 1.5 exists and subscribe to screen changes.
    pub fn new(xc: &XConn) -> Result<ScreenState> {
        let mut randr_monitors = false;
        if xc.has_extension(randr::X11_EXTENSION_NAME)? {
            let v = xc
                .conn
                .randr_query_version(1, 5)
                .map_err(|e| CaptureError::x("RRQueryVersion", e))?
                .reply()
                .map_err(|e| CaptureError::x("RRQueryVersion", e))?;
            randr_monitors = (v.major_version, v.minor_version) >= (1, 5);
            xc.conn
                .randr_select_input(
                    xc.root,
                    randr::NotifyMask::SCREEN_CHANGE
                        | randr::NotifyMask::CRTC_CHANGE
                        | randr::NotifyMask::OUTPUT_CHANGE,
                )
                .map_err(|e| CaptureError::x("RRSelectInput", e))?;
        }
        Ok(ScreenState {
            randr_monitors,
            size: None,
            atom_names: HashMap::new(),
            output_names: HashMap::new(),
        })
    }

    /// Take one event (the grabber drains the queue and hands each one here):
    /// any RandR notification invalidates the cached size.
    pub fn on_event(&mut self, ev: &Event) {
        if matches!(
            ev,
            Event::RandrScreenChangeNotify(_) | Event::RandrNotify(_)
        ) {
            self.size = None;
        }
    }

    /// The current root size (re-read after a RandR change; the caller
    /// drains the event queue first).
    pub fn size(&mut self, xc: &XConn) -> Result<(u32, u32)> {
        if let Some(s) = self.size {
            return Ok(s);
        }
        let s = xc.root_size()?;
        self.size = Some(s);
        Ok(s)
    }

    /// Monitors as they are now: index 0 = whole screen, then each RandR monitor.
    pub fn monitors(&mut self, xc: &XConn) -> Result<Vec<Monitor>> {
        // Always fresh: `xrandr --setmonitor` changes monitors without any event.
        self.size = None;
        let (w, h) = self.size(xc)?;
        let mut out = vec![Monitor {
            left: 0,
            top: 0,
            width: w,
            height: h,
            name: "all".into(),
            output: None,
            primary: false,
            description: None,
            scale: 1.0,
            transform: 0,
            physical: (w, h),
        }];
        if !self.randr_monitors {
            return Ok(out);
        }
        let reply = xc
            .conn
            .randr_get_monitors(xc.root, true)
            .map_err(|e| CaptureError::x("RRGetMonitors", e))?
            .reply()
            .map_err(|e| CaptureError::x("RRGetMonitors", e))?;
        for m in reply.monitors {
            let name = self.atom_name(xc, m.name)?;
            let output = match m.outputs.first() {
                Some(&o) => Some(self.output_name(xc, o, reply.timestamp)?),
                None => None,
            };
            out.push(Monitor {
                left: m.x as i32,
                top: m.y as i32,
                width: m.width as u32,
                height: m.height as u32,
                name,
                output,
                primary: m.primary,
                description: None,
                scale: 1.0,
                transform: 0,
                physical: (m.width as u32, m.height as u32),
            });
        }
        Ok(out)
    }

    fn atom_name(&mut self, xc: &XConn, atom: xproto::Atom) -> Result<String> {
        if let Some(n) = self.atom_names.get(&atom) {
            return Ok(n.clone());
        }
        let r = xc
            .conn
            .get_atom_name(atom)
            .map_err(|e| CaptureError::x("GetAtomName", e))?
            .reply()
            .map_err(|e| CaptureError::x("GetAtomName", e))?;
        let n = String::from_utf8_lossy(&r.name).into_owned();
        self.atom_names.insert(atom, n.clone());
        Ok(n)
    }

    fn output_name(
        &mut self,
        xc: &XConn,
        output: randr::Output,
        ts: xproto::Timestamp,
    ) -> Result<String> {
        if let Some(n) = self.output_names.get(&output) {
            return Ok(n.clone());
        }
        let r = xc
            .conn
            .randr_get_output_info(output, ts)
            .map_err(|e| CaptureError::x("RRGetOutputInfo", e))?
            .reply()
            .map_err(|e| CaptureError::x("RRGetOutputInfo", e))?;
        let n = String::from_utf8_lossy(&r.name).into_owned();
        self.output_names.insert(output, n.clone());
        Ok(n)
    }
}
