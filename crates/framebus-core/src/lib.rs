//! # framebus-core
//!
//! The one memory model everything in framebus stands on:
//!
//! ```text
//!  FramePool ──owns──▶ Slot (memfd-backed, page-aligned mapping)
//!                        ▲
//!    Lease (Arc) ────────┘  cloned by every holder; the last drop gives the slot back
//!      ▲        ▲        ▲
//!   Frame   buffer view  DLPack capsule / pipe job / channel pin
//! ```
//!
//! * [`Slot`] — one fd-backed mapping (`memfd_create` + `mmap(MAP_SHARED)`), so the
//!   same memory can be handed to the X server (MIT-SHM `attach_fd`), to another
//!   process (SCM_RIGHTS) or to a pipe writer.
//! * [`Lease`] — a reference-counted claim on a slot. Reuse is decided here, in
//!   one place, by reference counts: a slot returns to its [`SlotHome`] (usually
//!   the [`FramePool`]) exactly when its last lease is dropped.
//! * [`FramePool`] — bounded, observable allocator of slots with most-recently-freed
//!   reuse, blocking or failing at its limit, and `trim()` to give memory back.
//! * [`StridedView`] — the one place a foreign buffer's shape and strides become
//!   a [`FrameLayout`] ([`FrameLayout::from_strides`]).
//! * [`fork`] — fork detection; the pool never hands a forked child a slot the
//!   parent may use.
//! * [`Frame`] — a lease plus geometry ([`FrameLayout`]: width, height, stride,
//!   [`PixelFormat`]) and capture metadata (timestamp, sequence number).
//!
//! This crate has no Python, no X11 and no CUDA; every feature crate depends on it
//! and it depends on nothing of framebus.

mod error;
pub mod fork;
mod format;
mod frame;
mod lease;
mod pool;
mod slot;
mod strided;

pub use error::{Error, Result};
pub use format::{FrameLayout, PixelFormat};
pub use frame::Frame;
pub use lease::{Lease, SlotHome};
pub use pool::{default_max_bytes, Exhausted, FramePool, PoolConfig, PoolStats};
pub use slot::{page_size, Slot, SlotHook};
pub use strided::{Expected, RowSpan, StridedView};

/// Nanoseconds on `CLOCK_MONOTONIC`, the clock every framebus timestamp uses
/// (the same clock as Python's `time.monotonic_ns()`, shared by all processes).
pub fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
