//! `XConn`: one x11rb `RustConnection` (pure Rust, no libX11/libxcb) to a
//! display, with the facts the grabbers need: the root window, whether the
//! socket is TCP (MIT-SHM fd passing is impossible there), which extensions
//! exist, and the pixel-format checks (24/32-bit TrueColor, LSB-first,
//! 32 bits per pixel, no row padding) done once at connect time.
//!
//! Used by `shm`, `monitors`, `cursor` and `backend`; depends on nothing else
//! of this crate but the error type.

use crate::{CaptureError, Result};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xproto::{self, ConnectionExt as _};
use x11rb::rust_connection::RustConnection;

/// An open display and what we learned about it.
pub(crate) struct XConn {
    pub conn: RustConnection,
    /// The display name as given (or `$DISPLAY`), for messages.
    pub display: String,
    pub root: xproto::Window,
    /// The root visual's depth (24 or 32).
    pub depth: u8,
    /// Connected over TCP: fd passing (MIT-SHM attach_fd) cannot work.
    pub is_tcp: bool,
}

impl XConn {
    /// Connect to `display` (None = `$DISPLAY`, see [`resolve_display`]) and
    /// check the root visual.
    pub fn open(display: Option<&str>) -> Result<XConn> {
        let name = resolve_display(display)?;
        let (conn, screen_num) =
            RustConnection::connect(Some(&name)).map_err(|e| CaptureError::Connect {
                display: name.clone(),
                reason: e.to_string(),
            })?;
        let is_tcp = socket_is_tcp(&conn);
        let setup = conn.setup();
        let screen = setup
            .roots
            .get(screen_num)
            .ok_or_else(|| CaptureError::Connect {
                display: name.clone(),
                reason: format!(
                    "screen {screen_num} does not exist ({} screens)",
                    setup.roots.len()
                ),
            })?;
        check_visual(setup, screen).map_err(|what| CaptureError::UnsupportedVisual {
            display: name.clone(),
            what,
        })?;
        Ok(XConn {
            root: screen.root,
            depth: screen.root_depth,
            is_tcp,
            display: name,
            conn,
        })
    }

    /// True when the server has the named extension.
    pub fn has_extension(&self, name: &'static str) -> Result<bool> {
        Ok(self
            .conn
            .extension_information(name)
            .map_err(|e| CaptureError::x("QueryExtension", e))?
            .is_some())
    }

    /// The root window's current size (follows RandR resizes).
    pub fn root_size(&self) -> Result<(u32, u32)> {
        let g = self
            .conn
            .get_geometry(self.root)
            .map_err(|e| CaptureError::x("GetGeometry", e))?
            .reply()
            .map_err(|e| CaptureError::x("GetGeometry", e))?;
        Ok((g.width as u32, g.height as u32))
    }
}

/// The X display a connection for `display` goes to: `display` itself when
/// given (and not empty), else `$DISPLAY`; with neither,
/// [`CaptureError::NoDisplay`] naming both variables.
pub(crate) fn resolve_display(display: Option<&str>) -> Result<String> {
    match crate::grabber::resolve_target(display, crate::BackendChoice::X11)? {
        crate::DisplayTarget::X11(name) => Ok(name),
        crate::DisplayTarget::Wayland(name) => Err(CaptureError::BadArgument(format!(
            "display {name:?} is a Wayland socket, not an X display (X names contain ':')"
        ))),
    }
}

/// An environment variable's value, None when unset or empty.
pub(crate) fn non_empty_env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|s| !s.is_empty())
}

/// The connection's socket family: anything but AF_UNIX is remote for fd passing.
fn socket_is_tcp(conn: &RustConnection) -> bool {
    use rustix::fd::AsFd;
    match rustix::net::getsockname(conn.stream().as_fd()) {
        Ok(addr) => addr.address_family() != rustix::net::AddressFamily::UNIX,
        Err(_) => false,
    }
}

/// Accept only pixels that are 32-bit little-endian B,G,R,X/A words with no padding.
fn check_visual(setup: &xproto::Setup, screen: &xproto::Screen) -> std::result::Result<(), String> {
    let depth = screen.root_depth;
    if depth != 24 && depth != 32 {
        return Err(format!("root depth {depth}"));
    }
    if setup.image_byte_order != xproto::ImageOrder::LSB_FIRST {
        return Err("image byte order is MSB-first".into());
    }
    let fmt = setup
        .pixmap_formats
        .iter()
        .find(|f| f.depth == depth)
        .ok_or_else(|| format!("no pixmap format for depth {depth}"))?;
    if fmt.bits_per_pixel != 32 {
        return Err(format!(
            "{} bits per pixel at depth {depth}",
            fmt.bits_per_pixel
        ));
    }
    // With 32 bits per pixel, any scanline pad of 8, 16 or 32 bits adds no padding.
    if fmt.scanline_pad > 32 {
        return Err(format!("scanline pad of {} bits", fmt.scanline_pad));
    }
    let visual = screen
        .allowed_depths
        .iter()
        .flat_map(|d| d.visuals.iter())
        .find(|v| v.visual_id == screen.root_visual)
        .ok_or_else(|| format!("root visual {:#x} not listed", screen.root_visual))?;
    if visual.class != xproto::VisualClass::TRUE_COLOR {
        return Err(format!("visual class {:?}", visual.class));
    }
    if (visual.red_mask, visual.green_mask, visual.blue_mask) != (0xff0000, 0xff00, 0xff) {
        return Err(format!(
            "channel masks r={:#x} g={:#x} b={:#x}",
            visual.red_mask, visual.green_mask, visual.blue_mask
        ));
    }
    Ok(())
}
