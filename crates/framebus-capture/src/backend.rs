//! The backends' names, and the two ways of reading an X screen into a pool slot.
//!
//! * [`Backend::Xshm`]: `ShmGetImage` into the slot's own memfd, attached to
//!   the server once per slot (see `shm`). The server writes the pixels
//!   straight into the memory the caller then reads: no copy in this process.
//! * [`Backend::XGetImage`]: core `GetImage`; the reply arrives in a socket
//!   buffer and is copied once into the slot (the one copy of this path).
//!
//! A failure of the SHM machinery (not a bad region) is reported as
//! [`ShmFailure::Unusable`] so the grabber can switch backends once.
//!
//! Used by the `Grabber`; depends on `connection` and `shm`.

use crate::connection::XConn;
use crate::error::describe_reply_error;
use crate::shm::SegmentCache;
use crate::{CaptureError, Region, Result};
use framebus_core::Lease;
use x11rb::errors::ReplyError;
use x11rb::protocol::shm::ConnectionExt as _;
use x11rb::protocol::xproto::{self, ConnectionExt as _};
use x11rb::protocol::ErrorKind;

const ALL_PLANES: u32 = !0;

/// Which mechanism fills the slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// X11: MIT-SHM `ShmGetImage` into the slot's memfd (zero copies here).
    Xshm,
    /// X11: core `GetImage`, one copy from the reply into the slot.
    XGetImage,
    /// Wayland `ext-image-copy-capture-v1`: the compositor writes into a
    /// `wl_shm` buffer made from the slot's memfd (zero copies here).
    ExtImageCopy,
    /// Wayland `zwlr_screencopy_manager_v1`: as above, wlroots compositors.
    WlrScreencopy,
    /// The xdg-desktop-portal ScreenCast session, frames through PipeWire.
    Portal,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Xshm => "xshm",
            Backend::XGetImage => "xgetimage",
            Backend::ExtImageCopy => "ext-image-copy",
            Backend::WlrScreencopy => "wlr-screencopy",
            Backend::Portal => "portal",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// Wayland when `$WAYLAND_DISPLAY` is set, else X11; the best backend
    /// the server offers (see `grabber`).
    #[default]
    Auto,
    /// X11, MIT-SHM when it works, else XGetImage.
    X11,
    /// X11 MIT-SHM or an error.
    Xshm,
    /// X11, always XGetImage.
    XGetImage,
    /// Wayland: ext-image-copy, else wlr-screencopy, else the portal.
    Wayland,
    /// Wayland `ext-image-copy-capture-v1` or an error.
    ExtImageCopy,
    /// Wayland `zwlr_screencopy_manager_v1` or an error.
    WlrScreencopy,
    /// The ScreenCast portal (PipeWire) or an error.
    Portal,
}

impl BackendChoice {
    /// The name users write (`backend="..."`).
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::X11 => "x11",
            BackendChoice::Xshm => "xshm",
            BackendChoice::XGetImage => "xgetimage",
            BackendChoice::Wayland => "wayland",
            BackendChoice::ExtImageCopy => "ext-image-copy",
            BackendChoice::WlrScreencopy => "wlr-screencopy",
            BackendChoice::Portal => "portal",
        }
    }

    /// An X11-only choice.
    pub fn is_x11(self) -> bool {
        matches!(
            self,
            BackendChoice::X11 | BackendChoice::Xshm | BackendChoice::XGetImage
        )
    }

    /// A Wayland-only choice.
    pub fn is_wayland(self) -> bool {
        matches!(
            self,
            BackendChoice::Wayland
                | BackendChoice::ExtImageCopy
                | BackendChoice::WlrScreencopy
                | BackendChoice::Portal
        )
    }
}

impl std::fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackendChoice {
    type Err = CaptureError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "x11" | "x" => Ok(BackendChoice::X11),
            "xshm" | "xshmgetimage" | "shm" => Ok(BackendChoice::Xshm),
            "xgetimage" | "getimage" => Ok(BackendChoice::XGetImage),
            "wayland" => Ok(BackendChoice::Wayland),
            "ext-image-copy" | "ext-image-copy-capture" => Ok(BackendChoice::ExtImageCopy),
            "wlr-screencopy" | "screencopy" | "wlr" => Ok(BackendChoice::WlrScreencopy),
            "portal" | "pipewire" | "screencast" => Ok(BackendChoice::Portal),
            _ => Err(CaptureError::UnknownBackend(s.to_owned())),
        }
    }
}

/// Why an SHM grab failed.
pub(crate) enum ShmFailure {
    /// MIT-SHM does not work here (attach refused, server-side SHM error).
    Unusable(String),
    /// Anything else (region, connection): report, do not switch.
    Other(CaptureError),
}

/// True for X errors that a bad or stale region produces.
fn is_region_error(e: &ReplyError) -> bool {
    matches!(
        e,
        ReplyError::X11Error(x) if matches!(x.error_kind, ErrorKind::Match | ErrorKind::Value)
    )
}

/// The request geometry of a region already checked against the screen
/// (coordinates fit i16 and sizes u16 there).
fn xywh(r: Region) -> (i16, i16, u16, u16) {
    (r.left as i16, r.top as i16, r.width as u16, r.height as u16)
}

/// The image a reply describes must be the region's pixels at the root depth.
fn check_image(op: &'static str, xc: &XConn, depth: u8, bytes: u64, region: Region) -> Result<()> {
    let expected = region.width as u64 * region.height as u64 * 4;
    if depth != xc.depth || bytes != expected {
        return Err(CaptureError::X {
            op,
            detail: format!(
                "unexpected image: depth {depth} and {bytes} bytes, expected depth {} and \
                 {expected} bytes",
                xc.depth
            ),
        });
    }
    Ok(())
}

/// The sub-region of `region` made of its rows `[y0, y1)`.
fn band_region(region: Region, (y0, y1): (u32, u32)) -> Region {
    Region::new(region.left, region.top + y0 as i32, region.width, y1 - y0)
}

/// `ShmGetImage` of the row bands `bands` (`[y0, y1)` in frame rows; the
/// whole frame is `[(0, height)]`) of `region` into `lease`'s slot. A band of
/// whole rows is packed with the slot's stride, so it lands in place at
/// `y0 * stride`. All requests are sent before the first reply is read (one
/// round trip).
pub(crate) fn grab_shm(
    xc: &XConn,
    segments: &mut SegmentCache,
    lease: &Lease,
    region: Region,
    bands: &[(u32, u32)],
    shm_proven: bool,
) -> std::result::Result<(), ShmFailure> {
    let seg = segments
        .segment_for(xc, lease)
        .map_err(ShmFailure::Unusable)?;
    let stride = region.width * 4;
    let mut cookies = Vec::with_capacity(bands.len());
    for &band in bands {
        let (x, y, w, h) = xywh(band_region(region, band));
        let cookie = xc
            .conn
            .shm_get_image(
                xc.root,
                x,
                y,
                w,
                h,
                ALL_PLANES,
                xproto::ImageFormat::Z_PIXMAP.into(),
                seg,
                band.0 * stride,
            )
            .map_err(|e| ShmFailure::Other(CaptureError::x("ShmGetImage", e)))?;
        cookies.push((band, cookie));
    }
    let mut failure = None;
    // Read every reply, even after a failure, so none is left pending.
    for (band, cookie) in cookies {
        let sub = band_region(region, band);
        let result = match cookie.reply() {
            Ok(r) => check_image("ShmGetImage", xc, r.depth, r.size as u64, sub)
                .map_err(ShmFailure::Other),
            Err(e) if is_region_error(&e) || shm_proven => {
                Err(ShmFailure::Other(CaptureError::X {
                    op: "ShmGetImage",
                    detail: format!("{} for region {sub}", describe_reply_error(&e)),
                }))
            }
            Err(e) => Err(ShmFailure::Unusable(format!(
                "ShmGetImage failed: {}",
                describe_reply_error(&e)
            ))),
        };
        if let Err(e) = result {
            failure.get_or_insert(e);
        }
    }
    failure.map_or(Ok(()), Err)
}

/// `GetImage` of the row bands `bands` of `region`, each copied into
/// `lease`'s slot (which must be unique) at `y0 * stride`.
pub(crate) fn grab_getimage(
    xc: &XConn,
    lease: &mut Lease,
    region: Region,
    bands: &[(u32, u32)],
) -> Result<()> {
    let stride = region.width as usize * 4;
    let mut cookies = Vec::with_capacity(bands.len());
    for &band in bands {
        let (x, y, w, h) = xywh(band_region(region, band));
        let cookie = xc
            .conn
            .get_image(
                xproto::ImageFormat::Z_PIXMAP,
                xc.root,
                x,
                y,
                w,
                h,
                ALL_PLANES,
            )
            .map_err(|e| CaptureError::x("GetImage", e))?;
        cookies.push((band, cookie));
    }
    let mut failure = None;
    for (band, cookie) in cookies {
        let sub = band_region(region, band);
        let result = cookie
            .reply()
            .map_err(|e| CaptureError::X {
                op: "GetImage",
                detail: format!("{} for region {sub}", describe_reply_error(&e)),
            })
            .and_then(|reply| {
                check_image("GetImage", xc, reply.depth, reply.data.len() as u64, sub)?;
                let dst = lease.get_mut().ok_or_else(|| CaptureError::X {
                    op: "GetImage",
                    detail: "the destination slot is shared or read-only".into(),
                })?;
                let at = band.0 as usize * stride;
                // The one copy of this backend: socket reply buffer -> pool slot.
                dst[at..at + reply.data.len()].copy_from_slice(&reply.data);
                Ok(())
            });
        if let Err(e) = result {
            failure.get_or_insert(e);
        }
    }
    failure.map_or(Ok(()), Err)
}
