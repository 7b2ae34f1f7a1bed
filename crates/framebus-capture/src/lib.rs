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
//!     │ └─ cursor    (XFixes cursor image blended in on request)
//!     └─▶ Frame (BGRA, read-only, timestamp + sequence number)
//!  Capture ── a thread running a Grabber, bounded ring, latest()/next()
//! ```
//!
//! Depends on framebus-core only; the Python bindings and the CLI sit above.

mod backend;
mod connection;
mod continuous;
mod cursor;
mod error;
mod grabber;
mod monitors;
mod region;
mod shm;
#[doc(hidden)]
pub mod testing;

pub use backend::{Backend, BackendChoice};
pub use continuous::{Capture, CaptureConfig, CaptureStats};
pub use error::{CaptureError, Result};
pub use grabber::Grabber;
pub use monitors::Monitor;
pub use region::Region;
