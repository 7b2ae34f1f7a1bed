//! Test-only helpers (hidden from the docs): draw pixels on the root window.
//!
//! Tests need a known picture on the screen to check captures pixel by
//! pixel. `put_image` sends BGRA pixels with core `PutImage` (in strips that
//! fit the request-size limit) and waits for the server to process them.
//! Nothing in the library uses this module.

use crate::connection::XConn;
use crate::{CaptureError, Region, Result};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{self, ConnectionExt as _};

/// Draw a `width`×`height` BGRA picture at (`left`, `top`) on the root window
/// of `display`. The fourth byte of each pixel is ignored by a depth-24 screen.
pub fn put_image(display: Option<&str>, region: Region, bgra: &[u8]) -> Result<()> {
    let n = region.width as usize * region.height as usize * 4;
    if bgra.len() != n {
        return Err(CaptureError::BadArgument(format!(
            "put_image: {} bytes given for a {}x{} BGRA picture ({n} bytes)",
            bgra.len(),
            region.width,
            region.height
        )));
    }
    let xc = XConn::open(display)?;
    let (w, h) = xc.root_size()?;
    region.check_inside(w, h)?;
    let gc = xc
        .conn
        .generate_id()
        .map_err(|e| CaptureError::x("generate_id", e))?;
    xc.conn
        .create_gc(gc, xc.root, &xproto::CreateGCAux::new())
        .map_err(|e| CaptureError::x("CreateGC", e))?;
    let row = region.width as usize * 4;
    // Stay well under the 256 KiB core request limit (no BIG-REQUESTS needed).
    let rows_per_strip = (200 * 1024 / row).max(1);
    for (i, strip) in bgra.chunks(row * rows_per_strip).enumerate() {
        let rows = strip.len() / row;
        xc.conn
            .put_image(
                xproto::ImageFormat::Z_PIXMAP,
                xc.root,
                gc,
                region.width as u16,
                rows as u16,
                region.left as i16,
                (region.top as usize + i * rows_per_strip) as i16,
                0,
                xc.depth,
                strip,
            )
            .map_err(|e| CaptureError::x("PutImage", e))?;
    }
    xc.conn
        .free_gc(gc)
        .map_err(|e| CaptureError::x("FreeGC", e))?;
    // A round trip: every request above has been processed when it returns.
    xc.conn
        .get_input_focus()
        .map_err(|e| CaptureError::x("GetInputFocus", e))?
        .reply()
        .map_err(|e| CaptureError::x("GetInputFocus", e))?;
    while let Some(ev) = xc
        .conn
        .poll_for_event()
        .map_err(|e| CaptureError::x("reading events", e))?
    {
        if let x11rb::protocol::Event::Error(e) = ev {
            return Err(CaptureError::x("PutImage", format!("{e:?}")));
        }
    }
    Ok(())
}
