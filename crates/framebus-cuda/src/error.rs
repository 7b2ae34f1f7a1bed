//! The one error type of framebus-cuda.

use thiserror::Error;

/// Result alias of the crate.
pub type Result<T, E = CudaError> = std::result::Result<T, E>;

/// Why CUDA cannot be used at all on this machine (nothing was tried on a GPU).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Unavailable {
    /// The driver library could not be loaded.
    #[error("no CUDA driver library: {0} (install the NVIDIA driver, or set FRAMEBUS_CUDA_DRIVER to libcuda.so)")]
    NoLibrary(String),
    /// The library lacks an entry point framebus needs.
    #[error("the CUDA driver library {path} lacks {symbol} (driver too old?)")]
    MissingSymbol { path: String, symbol: String },
    /// The driver is older than framebus needs.
    #[error("the CUDA driver is too old: version {found} (framebus needs {needed} or newer)")]
    DriverTooOld { found: String, needed: String },
    /// `cuInit` failed (no device, driver/kernel module mismatch, ...).
    #[error("the CUDA driver did not initialise: {0}")]
    InitFailed(String),
    /// The driver works but sees no device.
    #[error("no CUDA device (the driver sees 0 devices)")]
    NoDevice,
    /// The device number is beyond the devices the driver sees.
    #[error("no CUDA device {index} (the driver sees {count})")]
    NoSuchDevice { index: i64, count: usize },
    /// NVRTC (to compile framebus's GPU kernels) could not be loaded.
    #[error("no NVRTC library to compile framebus's GPU kernels: {0} (pip install nvidia-cuda-nvrtc-cu12, or set FRAMEBUS_CUDA_NVRTC to libnvrtc.so)")]
    NoNvrtc(String),
}

/// Every failure of framebus-cuda.
#[derive(Debug, Error)]
pub enum CudaError {
    /// CUDA is not usable here; says what is missing.
    #[error("CUDA unavailable: {0}")]
    Unavailable(#[from] Unavailable),
    /// A driver call failed.
    #[error("{call} failed: {name} ({code}){context}")]
    Driver {
        call: &'static str,
        code: i32,
        name: String,
        context: String,
    },
    /// The device (or a device pool) has no memory left for a request.
    #[error("out of GPU memory: {what}")]
    OutOfMemory { what: String },
    /// A device pool is at its limit and every buffer is in use.
    #[error("device pool exhausted: {0}")]
    PoolExhausted(String),
    /// The device pool was closed.
    #[error("the device pool was closed")]
    PoolClosed,
    /// A bad argument (named with its value).
    #[error("invalid {what}={value} ({why})")]
    Invalid {
        what: &'static str,
        value: String,
        why: String,
    },
    /// NVRTC could not compile a kernel.
    #[error("NVRTC could not compile framebus's kernels for {arch}: {log}")]
    Compile { arch: String, log: String },
    /// A wait that ran out.
    #[error("timed out after {0:.3} s waiting for the GPU")]
    Timeout(f64),
    /// An error of the core (pool, layout).
    #[error(transparent)]
    Core(#[from] framebus_core::Error),
}

impl CudaError {
    /// An [`CudaError::Invalid`] naming `what` and `value`.
    pub fn invalid(what: &'static str, value: impl ToString, why: impl Into<String>) -> Self {
        CudaError::Invalid {
            what,
            value: value.to_string(),
            why: why.into(),
        }
    }

    /// True for the out-of-memory failures (driver or pool).
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, CudaError::OutOfMemory { .. })
    }
}
