//! # framebus-cuda
//!
//! framebus frames on NVIDIA GPUs, with the CUDA driver loaded at run time
//! (framebus builds, installs and imports with no toolkit and no GPU):
//!
//! * [`driver`] — the ~30 driver entry points over `libloading`; the library
//!   is `libcuda.so.1` or `$FRAMEBUS_CUDA_DRIVER` (the fake driver of the tests,
//!   `fake/fake_cuda.c`). [`is_available`], [`device_count`], and
//!   [`Unavailable`] saying what is missing.
//! * [`pinned`] — a `SlotHook` that pins each `FramePool` slot once per mapping.
//! * [`pool`] — `DevicePool`: device buffers with leases, limits, stats, trim,
//!   and reuse fenced by the GPU work queued on them.
//! * [`frame`] — `CudaFrame`, stream-ordered [`frame::upload`] with conversion
//!   kernels ([`kernels`], compiled by [`nvrtc`] at first use), download, and
//!   exports for DLPack / `__cuda_array_interface__` consumers.
//!
//! Depends on framebus-core only; no Python here.

pub mod device;
pub mod driver;
mod error;
pub mod frame;
pub mod kernels;
pub mod nvrtc;
pub mod pinned;
pub mod pool;

pub use device::{device, device_count, Device, Event, StreamHandle};
pub use error::{CudaError, Result, Unavailable};
pub use frame::{
    plan, upload, upload_leased, Consumer, CudaFrame, DeviceFormat, Download, ExportGuard, Upload,
    UploadPlan,
};
pub use kernels::{ResizeMethod, YuvWeights};
pub use pinned::{is_pinned, PinHook, PinStats};
pub use pool::{Attempt, DeviceLease, DevicePool, DevicePoolConfig, DevicePoolStats, Fence};

/// True when a CUDA driver loads, initialises and sees at least one device.
pub fn is_available() -> bool {
    driver::driver().is_ok()
}

/// Why CUDA is not available (`None` when it is).
pub fn unavailable_reason() -> Option<Unavailable> {
    driver::driver().err()
}
