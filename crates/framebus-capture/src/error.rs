//! `CaptureError`: every failure of this crate, with the value that was wrong.
//!
//! X protocol errors, connection failures, bad regions and pool errors all end
//! up here; nothing in this crate panics or exits on an X error (x11rb's
//! `RustConnection` reports errors as values, there is no Xlib error handler).
//! The Python bindings map [`CaptureError::BadRegion`] and
//! [`CaptureError::BadMonitor`] to `ValueError`, [`CaptureError::Core`] through
//! the core mapping and everything else to `framebus.CaptureError`.

use crate::Region;

/// Result alias for this crate.
pub type Result<T, E = CaptureError> = std::result::Result<T, E>;

/// Errors raised while connecting to the X server or grabbing.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// No display was named and the environment names none either.
    #[error(
        "no display to capture from: no display was given{}; {}",
        match (.wayland_display, .display) {
            (None, None) => " and neither $WAYLAND_DISPLAY nor $DISPLAY is set".to_owned(),
            (w, d) => format!(
                ", $WAYLAND_DISPLAY is {} and $DISPLAY is {}",
                w.as_deref().map_or("not set".to_owned(), |v| format!("{v:?}")),
                d.as_deref().map_or("not set".to_owned(), |v| format!("{v:?}"))
            ),
        },
        match .backend {
            crate::BackendChoice::Auto => "pass display= (a Wayland socket such as \"wayland-1\", \
                or an X display such as \":0\") or set $WAYLAND_DISPLAY or $DISPLAY".to_owned(),
            b if b.is_x11() => format!("backend {b} needs an X display: pass one such as \":0\" or set $DISPLAY"),
            b => format!("backend {b} needs a Wayland socket: pass one such as \"wayland-1\" or set $WAYLAND_DISPLAY"),
        }
    )]
    NoDisplay {
        /// `$WAYLAND_DISPLAY`, when set.
        wayland_display: Option<String>,
        /// `$DISPLAY`, when set.
        display: Option<String>,
        /// What was asked for.
        backend: crate::BackendChoice,
    },
    /// No backend could capture from this display: each one tried, and why.
    #[error("no capture backend works on {display:?}: {tried}")]
    NoBackend { display: String, tried: String },
    /// A Wayland request failed, the compositor refused a capture, or the
    /// connection broke (the compositor went away).
    #[error("Wayland {op} failed: {detail}")]
    Wayland { op: &'static str, detail: String },
    /// A step of the ScreenCast portal (D-Bus) or of its PipeWire stream failed.
    #[error("screen-cast portal: {step} failed: {detail}")]
    Portal { step: &'static str, detail: String },
    /// The display could not be opened.
    #[error("cannot open X display {display:?}: {reason}")]
    Connect { display: String, reason: String },
    /// The root window's pixels are not 32-bit little-endian TrueColor.
    #[error("unsupported X visual on display {display:?}: {what} (framebus captures 24/32-bit TrueColor, LSB-first, 32 bits per pixel)")]
    UnsupportedVisual { display: String, what: String },
    /// The region does not fit on the screen (or is empty).
    #[error("region {region} {why}; the screen is 0,0 {screen_w}x{screen_h} (x in 0..{screen_w}, y in 0..{screen_h})")]
    BadRegion {
        region: Region,
        screen_w: u32,
        screen_h: u32,
        why: &'static str,
    },
    /// Region coordinates that no screen can have: an edge outside `i32`, a
    /// size outside `1..=u32::MAX`, or a right/bottom edge past `i32::MAX`.
    #[error("region {region} {why}")]
    InvalidRegion { region: String, why: &'static str },
    /// A monitor index that does not exist.
    #[error("monitor {index} does not exist: {count} monitors (0 = all of them, 1..{last} = each)", last = .count - 1)]
    BadMonitor { index: usize, count: usize },
    /// An argument out of range (buffer size, frame rate...).
    #[error("{0}")]
    BadArgument(String),
    /// A backend name that is not known.
    #[error("unknown capture backend {0:?}; expected one of auto, x11, xshm, xgetimage, wayland, ext-image-copy, wlr-screencopy, portal")]
    UnknownBackend(String),
    /// The requested backend cannot run on this display.
    #[error("capture backend {backend} is not available: {reason}")]
    BackendUnavailable {
        backend: &'static str,
        reason: String,
    },
    /// The X server answered a request with an error, or the connection broke.
    #[error("X request {op} failed: {detail}")]
    X { op: &'static str, detail: String },
    /// Continuous capture was stopped (None), or its thread failed: a grab
    /// error or a panic (the reason, also kept in `Capture::error`).
    #[error("capture stopped{}", match .0 { Some(r) => format!(": {r}"), None => String::new() })]
    Stopped(Option<String>),
    /// Waiting for a frame took longer than the timeout.
    #[error("no new frame within {0:.3} s")]
    Timeout(f64),
    /// A pool or frame error from framebus-core (exhausted, closed, too large...).
    #[error(transparent)]
    Core(#[from] framebus_core::Error),
}

impl CaptureError {
    /// Wrap any x11rb error with the request that produced it.
    pub(crate) fn x(op: &'static str, e: impl std::fmt::Display) -> Self {
        CaptureError::X {
            op,
            detail: e.to_string(),
        }
    }

    /// Errors that mean "the region is wrong", which must never be taken as a
    /// reason to switch backends.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            CaptureError::BadRegion { .. }
                | CaptureError::InvalidRegion { .. }
                | CaptureError::BadMonitor { .. }
                | CaptureError::BadArgument(_)
                | CaptureError::UnknownBackend(_)
        )
    }
}

/// Describe an x11rb reply error, naming the X error code (BadAccess, ...).
pub(crate) fn describe_reply_error(e: &x11rb::errors::ReplyError) -> String {
    match e {
        x11rb::errors::ReplyError::X11Error(x) => format!(
            "{:?} (major opcode {}, minor {}, bad value {:#x})",
            x.error_kind, x.major_opcode, x.minor_opcode, x.bad_value
        ),
        x11rb::errors::ReplyError::ConnectionError(c) => format!("connection error: {c}"),
    }
}
