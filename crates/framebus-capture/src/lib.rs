//! # framebus-capture
//!
//! Screen capture on X11 straight into [`framebus_core::FramePool`] slots,
//! pure Rust through x11rb's `RustConnection` (no libX11 or libxcb at run time).
//!
//! ```text
//!  Grabber ── connection (x11rb, visual checks)
//!     │ ├─ monitors  (RandR monitors, screen size kept current)
//!     │ ├─ backend   (xshm: ShmGetImage into the slot's memfd | xgetimage: GetImage + 1 copy)
//!     │ │     └─ shm (MIT-SHM ≥ 1.2 check, segment cache keyed by slot id)
//!     │ ├─ cursor    (XFixes cursor image blended in on request)
//!     │ └─ damage    (XDamage history; incremental: copy only changed row bands)
//!     └─▶ Frame (BGRA, read-only, timestamp + sequence number)
//!  Capture ── a thread running a Grabber, bounded ring, latest()/next();
//!             a failed or panicking thread ends it with an error every waiter sees
//!  SharedGrabber / grab_shared ── one reconnecting grabber for one-shot grabs
//!             (display lookup, Target: screen / monitor index / rectangle)
//! ```
//!
//! Depends on framebus-core only; the Python bindings and the CLI sit above.
//! (PNG encoding is `framebus_kernels::png`: feature crates never depend on
//! each other.)

mod backend;
mod connection;
mod continuous;
mod cursor;
mod damage;
mod error;
mod grabber;
mod monitors;
mod portal;
mod region;
mod shared;
mod shm;
mod source;
#[doc(hidden)]
pub mod testing;
mod wayland;
mod x11;

pub use backend::{Backend, BackendChoice};
pub use continuous::{
    Capture, CaptureConfig, CaptureStats, MAX_BUFFER, MAX_TARGET_FPS, MIN_TARGET_FPS,
};
pub use error::{CaptureError, Result};
pub use grabber::{resolve_target, DisplayTarget, Grabber};
pub use monitors::Monitor;
pub use portal::{PortalOptions, PortalSource, PortalStats, PortalStream};
pub use region::Region;
pub use shared::{close_shared, grab_shared, SharedGrabber, Target};
