//! # framebus-kernels
//!
//! Pixel-format conversion and scaling over strided images, written straight
//! into the destination (a pool slot, a NumPy array): no full-size temporary.
//!
//! * [`convert`] — BGRA, BGRX, RGBA, RGB, BGR, GRAY8, GRAY16, RGBA16 between each
//!   other, and to NV12 / I420 (BT.601 / BT.709, limited / full range).
//! * [`resize`] — box (integer factor), bilinear and area resize of 8-bit packed
//!   images, fused with the format conversion; [`to_tensor`] — the same into
//!   planar CHW float32 normalised with mean/std.
//!
//! Every row kernel has a scalar version (`scalar`) and runtime-detected SIMD
//! variants (`x86_ssse3`, `x86_avx2`, `neon`) that produce identical bytes;
//! [`Simd`] / `FRAMEBUS_SIMD` force a level. Images are cut into row bands that
//! run on framebus's own cached rayon pools (never rayon's global pool) above a
//! size threshold ([`PAR_MIN_BYTES`]).
//! * Fork-safe: the pools are per [`framebus_core::fork::generation`], so a
//!   forked child starts fresh pools instead of waiting forever on the
//!   parent's vanished worker threads.
//! * Cancellable: [`convert_cancellable`], [`resize_cancellable`] and
//!   [`to_tensor_cancellable`] check an `&AtomicBool` before every row and
//!   return [`KernelError::Cancelled`] once it is set.
//!
//! Formulas, rounding and thresholds: docs/kernels.md.
//!
//! Depends on `framebus-core` (for `PixelFormat` / `FrameLayout`) and rayon only.

#[cfg(target_arch = "x86_64")]
#[macro_use]
mod x86_body;

#[cfg(test)]
mod conformance;
mod convert;
mod error;
mod image;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod png;
mod resize;
mod scalar;
mod simd;
mod spec;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_ssse3;

pub use convert::{
    convert, convert_cancellable, Options, BAND_BYTES, PAR_MIN_BYTES, STREAM_MIN_BYTES,
};
pub use error::{KernelError, Result};
pub use image::{needed_bytes, ImageMut, ImageRef};
pub use resize::{
    resize, resize_cancellable, to_tensor, to_tensor_cancellable, Method, TensorSpec,
};
pub use simd::{resolve as resolve_simd, Simd};
pub use spec::{yuv_weights, YuvMatrix, YuvRange};
