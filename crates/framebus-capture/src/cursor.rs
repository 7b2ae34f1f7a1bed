//! Cursor compositing with XFixes `GetCursorImage`.
//!
//! The cursor image is premultiplied ARGB (one u32 per pixel); it is blended
//! "over" the grabbed BGRA pixels where it overlaps the region. The X server
//! never includes the cursor in `GetImage`/`ShmGetImage`, so this is the only
//! way to show it.
//!
//! Used by `backend`; depends on `connection`.

use crate::connection::XConn;
use crate::{CaptureError, Region, Result};
use x11rb::protocol::xfixes::{self, ConnectionExt as _};

/// XFixes state: version negotiated once (the server requires it before use).
#[derive(Default)]
pub(crate) struct CursorSource {
    ready: Option<bool>,
}

/// The cursor picture and where it is on the screen.
pub(crate) struct CursorImage {
    /// Top-left of the picture in root coordinates (pointer minus hotspot).
    pub left: i32,
    pub top: i32,
    pub width: u32,
    pub height: u32,
    /// Premultiplied ARGB, row-major.
    pub argb: Vec<u32>,
}

impl CursorSource {
    /// Fetch the current cursor image.
    pub fn image(&mut self, xc: &XConn) -> Result<CursorImage> {
        if self.ready.is_none() {
            let ok = xc.has_extension(xfixes::X11_EXTENSION_NAME)?
                && xc
                    .conn
                    .xfixes_query_version(4, 0)
                    .map_err(|e| CaptureError::x("XFixesQueryVersion", e))?
                    .reply()
                    .map_err(|e| CaptureError::x("XFixesQueryVersion", e))?
                    .major_version
                    >= 2;
            self.ready = Some(ok);
        }
        if self.ready != Some(true) {
            return Err(CaptureError::BackendUnavailable {
                backend: "cursor",
                reason: "the X server has no XFixes 2.0 or later".into(),
            });
        }
        let r = xc
            .conn
            .xfixes_get_cursor_image()
            .map_err(|e| CaptureError::x("XFixesGetCursorImage", e))?
            .reply()
            .map_err(|e| CaptureError::x("XFixesGetCursorImage", e))?;
        Ok(CursorImage {
            left: r.x as i32 - r.xhot as i32,
            top: r.y as i32 - r.yhot as i32,
            width: r.width as u32,
            height: r.height as u32,
            argb: r.cursor_image,
        })
    }
}

/// Blend `cursor` over `dst`, a tightly packed BGRA image of `region`. The
/// fourth byte is left as the server gave it (the screen has no alpha).
pub(crate) fn composite(cursor: &CursorImage, region: Region, dst: &mut [u8]) {
    let stride = region.width as usize * 4;
    // Overlap of the cursor rectangle and the region, in root coordinates.
    let x0 = cursor.left.max(region.left) as i64;
    let y0 = cursor.top.max(region.top) as i64;
    let x1 = (cursor.left as i64 + cursor.width as i64).min(region.right());
    let y1 = (cursor.top as i64 + cursor.height as i64).min(region.bottom());
    for y in y0..y1 {
        let src_row = (y - cursor.top as i64) as usize * cursor.width as usize;
        let dst_row = (y - region.top as i64) as usize * stride;
        for x in x0..x1 {
            let p = cursor.argb[src_row + (x - cursor.left as i64) as usize];
            let a = p >> 24;
            if a == 0 {
                continue;
            }
            let d = dst_row + (x - region.left as i64) as usize * 4;
            let px = &mut dst[d..d + 4];
            let inv = 255 - a;
            for (c, shift) in [(0, 0), (1, 8), (2, 16)] {
                let s = (p >> shift) & 0xff;
                px[c] = (s + (px[c] as u32 * inv + 127) / 255).min(255) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blends_premultiplied_over_and_clips_to_region() {
        // 2x1 cursor at (9, 0): opaque red, half-transparent premultiplied white.
        let cursor = CursorImage {
            left: 9,
            top: 0,
            width: 2,
            height: 1,
            argb: vec![0xffff0000, 0x80808080],
        };
        let region = Region::new(8, 0, 2, 1);
        let mut dst = vec![0u8, 0, 0, 0, 10, 20, 30, 0];
        composite(&cursor, region, &mut dst);
        // Pixel x=8 untouched; x=9 = opaque red (B,G,R,A); x=10 is outside the region.
        assert_eq!(dst, vec![0, 0, 0, 0, 0, 0, 255, 0]);
        let mut dst = vec![100u8, 100, 100, 0];
        composite(&cursor, Region::new(10, 0, 1, 1), &mut dst);
        // 0x80 + 100 * 127 / 255 = 128 + 50 = 178
        assert_eq!(dst, vec![178, 178, 178, 0]);
    }
}
