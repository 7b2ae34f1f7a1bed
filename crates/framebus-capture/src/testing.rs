//! Test-only helpers (hidden from the docs): draw pixels on the root window.
//!
//! Tests need a known picture on the screen to check captures pixel by
//! pixel. `put_image` sends BGRA pixels with core `PutImage` (in strips that
//! fit the request-size limit) and waits for the server to process them;
//! `copy_area` scrolls part of the screen (core `CopyArea`, root to root);
//! `window` creates, moves and resizes a plain window that outlives the
//! call (close-down mode RetainPermanent) so later calls can move it.
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
    settle(&xc, "PutImage")
}

/// One round trip, then fail on any error event the server sent.
fn settle(xc: &XConn, op: &'static str) -> Result<()> {
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
            return Err(CaptureError::x(op, format!("{e:?}")));
        }
    }
    Ok(())
}

/// Copy `src` of the screen to (`left`, `top`) (a scroll when they overlap),
/// windows included, and wait until the server has done it.
pub fn copy_area(display: Option<&str>, src: Region, left: i32, top: i32) -> Result<()> {
    let xc = XConn::open(display)?;
    let gc = xc
        .conn
        .generate_id()
        .map_err(|e| CaptureError::x("generate_id", e))?;
    let aux = xproto::CreateGCAux::new()
        .subwindow_mode(xproto::SubwindowMode::INCLUDE_INFERIORS)
        .graphics_exposures(0);
    xc.conn
        .create_gc(gc, xc.root, &aux)
        .map_err(|e| CaptureError::x("CreateGC", e))?;
    xc.conn
        .copy_area(
            xc.root,
            xc.root,
            gc,
            src.left as i16,
            src.top as i16,
            left as i16,
            top as i16,
            src.width as u16,
            src.height as u16,
        )
        .map_err(|e| CaptureError::x("CopyArea", e))?;
    xc.conn
        .free_gc(gc)
        .map_err(|e| CaptureError::x("FreeGC", e))?;
    settle(&xc, "CopyArea")
}

/// Create (`id` None: returns the new id) or move and resize (`id` given) a
/// mapped, override-redirect window with background pixel `background`
/// (0xRRGGBB) at `region`; `destroy` removes window `id` instead. The window
/// outlives this call's connection (RetainPermanent).
pub fn window(
    display: Option<&str>,
    id: Option<u32>,
    region: Region,
    background: u32,
    destroy: bool,
) -> Result<u32> {
    let xc = XConn::open(display)?;
    let win = match id {
        Some(w) if destroy => {
            xc.conn
                .destroy_window(w)
                .map_err(|e| CaptureError::x("DestroyWindow", e))?;
            w
        }
        Some(w) => {
            let aux = xproto::ConfigureWindowAux::new()
                .x(region.left)
                .y(region.top)
                .width(region.width)
                .height(region.height);
            xc.conn
                .configure_window(w, &aux)
                .map_err(|e| CaptureError::x("ConfigureWindow", e))?;
            w
        }
        None => {
            xc.conn
                .set_close_down_mode(xproto::CloseDown::RETAIN_PERMANENT)
                .map_err(|e| CaptureError::x("SetCloseDownMode", e))?;
            let w = xc
                .conn
                .generate_id()
                .map_err(|e| CaptureError::x("generate_id", e))?;
            let aux = xproto::CreateWindowAux::new()
                .background_pixel(background)
                .override_redirect(1);
            xc.conn
                .create_window(
                    x11rb::COPY_DEPTH_FROM_PARENT,
                    w,
                    xc.root,
                    region.left as i16,
                    region.top as i16,
                    region.width as u16,
                    region.height as u16,
                    0,
                    xproto::WindowClass::INPUT_OUTPUT,
                    x11rb::COPY_FROM_PARENT,
                    &aux,
                )
                .map_err(|e| CaptureError::x("CreateWindow", e))?;
            xc.conn
                .map_window(w)
                .map_err(|e| CaptureError::x("MapWindow", e))?;
            w
        }
    };
    settle(&xc, "window")?;
    Ok(win)
}
