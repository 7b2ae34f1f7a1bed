//! The CUDA driver API, loaded at run time: the ~30 entry points framebus
//! uses, looked up in `libcuda.so.1` (or `$FRAMEBUS_CUDA_DRIVER`) the first
//! time anything asks for CUDA, through `libloading`.
//!
//! Nothing here links against CUDA, so framebus builds, installs and imports
//! on machines with no toolkit and no GPU; [`api`] then answers with an
//! [`Unavailable`] that says what is missing. The same mechanism selects the
//! fake driver of the tests (`fake/fake_cuda.c`): point
//! `FRAMEBUS_CUDA_DRIVER` at it before the first call.
//!
//! Symbols are looked up by their versioned names (`cuMemAlloc_v2`, ...),
//! the ones `cuda.h` maps the plain names to since CUDA 4/11, so the ABI is the
//! one the headers of every supported driver use.

use crate::error::{CudaError, Result, Unavailable};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

pub type CUresult = c_int;
pub type CUdevice = c_int;
pub type CUdeviceptr = u64;
pub type CUcontext = *mut c_void;
pub type CUstream = *mut c_void;
pub type CUevent = *mut c_void;
pub type CUmodule = *mut c_void;
pub type CUfunction = *mut c_void;

pub const CUDA_SUCCESS: CUresult = 0;
pub const CUDA_ERROR_OUT_OF_MEMORY: CUresult = 2;
pub const CUDA_ERROR_NO_DEVICE: CUresult = 100;
pub const CUDA_ERROR_NOT_READY: CUresult = 600;
pub const CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED: CUresult = 712;
pub const CU_MEMHOSTREGISTER_PORTABLE: c_uint = 1;
/// The GPU only reads the registered range (needed for read-only mappings; CUDA 11.1+).
pub const CU_MEMHOSTREGISTER_READ_ONLY: c_uint = 8;
pub const CU_STREAM_NON_BLOCKING: c_uint = 1;
pub const CU_EVENT_DISABLE_TIMING: c_uint = 2;
pub const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
pub const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: c_int = 76;
/// The legacy default stream handle (DLPack's stream `1`).
pub const CU_STREAM_LEGACY: usize = 1;
/// The per-thread default stream handle (DLPack's stream `2`).
pub const CU_STREAM_PER_THREAD: usize = 2;

/// Oldest driver framebus accepts: CUDA 11.0 (`cuDriverGetVersion` = 11000).
pub const MIN_DRIVER_VERSION: c_int = 11000;

/// The environment variable that names the driver library to load.
pub const DRIVER_ENV: &str = "FRAMEBUS_CUDA_DRIVER";

macro_rules! driver_api {
    ($($field:ident = $sym:literal : fn($($arg:ty),*);)*) => {
        /// The driver's entry points (plain C function pointers) and the
        /// library that keeps them valid.
        pub struct Api {
            /// The path or name the library was loaded from.
            pub path: String,
            $(pub $field: unsafe extern "C" fn($($arg),*) -> CUresult,)*
            _lib: libloading::Library,
        }

        impl Api {
            /// Load the library at `path` and look up every entry point.
            pub fn load(path: &str) -> std::result::Result<Api, Unavailable> {
                // SAFETY: loading a shared library runs its initialisers; the
                // driver library (or the fake) is meant to be loaded this way.
                let lib = unsafe { libloading::Library::new(path) }
                    .map_err(|e| Unavailable::NoLibrary(format!("{path}: {e}")))?;
                $(
                    // SAFETY: the symbol has this C signature in cuda.h (the
                    // versioned name is the one the headers use); the pointer
                    // stays valid while `_lib` lives, which is as long as `Api`.
                    let $field = unsafe {
                        *lib.get::<unsafe extern "C" fn($($arg),*) -> CUresult>(
                            concat!($sym, "\0").as_bytes(),
                        )
                        .map_err(|_| Unavailable::MissingSymbol {
                            path: path.to_owned(),
                            symbol: $sym.to_owned(),
                        })?
                    };
                )*
                Ok(Api { path: path.to_owned(), $($field,)* _lib: lib })
            }
        }
    };
}

driver_api! {
    init = "cuInit": fn(c_uint);
    driver_get_version = "cuDriverGetVersion": fn(*mut c_int);
    device_get_count = "cuDeviceGetCount": fn(*mut c_int);
    device_get = "cuDeviceGet": fn(*mut CUdevice, c_int);
    device_get_name = "cuDeviceGetName": fn(*mut c_char, c_int, CUdevice);
    device_get_attribute = "cuDeviceGetAttribute": fn(*mut c_int, c_int, CUdevice);
    device_total_mem = "cuDeviceTotalMem_v2": fn(*mut usize, CUdevice);
    primary_ctx_retain = "cuDevicePrimaryCtxRetain": fn(*mut CUcontext, CUdevice);
    ctx_set_current = "cuCtxSetCurrent": fn(CUcontext);
    ctx_synchronize = "cuCtxSynchronize": fn();
    mem_alloc = "cuMemAlloc_v2": fn(*mut CUdeviceptr, usize);
    mem_free = "cuMemFree_v2": fn(CUdeviceptr);
    mem_get_info = "cuMemGetInfo_v2": fn(*mut usize, *mut usize);
    mem_host_register = "cuMemHostRegister_v2": fn(*mut c_void, usize, c_uint);
    mem_host_unregister = "cuMemHostUnregister": fn(*mut c_void);
    memcpy_htod_async = "cuMemcpyHtoDAsync_v2": fn(CUdeviceptr, *const c_void, usize, CUstream);
    memcpy_dtoh_async = "cuMemcpyDtoHAsync_v2": fn(*mut c_void, CUdeviceptr, usize, CUstream);
    stream_create = "cuStreamCreate": fn(*mut CUstream, c_uint);
    stream_destroy = "cuStreamDestroy_v2": fn(CUstream);
    stream_wait_event = "cuStreamWaitEvent": fn(CUstream, CUevent, c_uint);
    stream_synchronize = "cuStreamSynchronize": fn(CUstream);
    event_create = "cuEventCreate": fn(*mut CUevent, c_uint);
    event_destroy = "cuEventDestroy_v2": fn(CUevent);
    event_record = "cuEventRecord": fn(CUevent, CUstream);
    event_query = "cuEventQuery": fn(CUevent);
    event_synchronize = "cuEventSynchronize": fn(CUevent);
    module_load_data = "cuModuleLoadData": fn(*mut CUmodule, *const c_void);
    module_get_function = "cuModuleGetFunction": fn(*mut CUfunction, CUmodule, *const c_char);
    launch_kernel = "cuLaunchKernel": fn(
        CUfunction, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, CUstream,
        *mut *mut c_void, *mut *mut c_void
    );
    get_error_name = "cuGetErrorName": fn(CUresult, *mut *const c_char);
}

/// The driver as this process sees it, after `cuInit` and the version check.
pub struct Driver {
    pub api: Api,
    /// `cuDriverGetVersion`, e.g. 12040 for CUDA 12.4.
    pub version: i32,
    /// Devices the driver sees (at least 1).
    pub device_count: usize,
}

/// The library to load: `$FRAMEBUS_CUDA_DRIVER` when set and not empty,
/// else `libcuda.so.1`.
pub fn driver_path() -> String {
    std::env::var(DRIVER_ENV)
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "libcuda.so.1".to_owned())
}

/// Load, initialise and check the driver at `path` (no global state).
pub fn open(path: &str) -> std::result::Result<Driver, Unavailable> {
    let api = Api::load(path)?;
    // SAFETY: cuInit(0) has no preconditions; flags must be 0.
    let r = unsafe { (api.init)(0) };
    if r == CUDA_ERROR_NO_DEVICE {
        return Err(Unavailable::NoDevice);
    }
    if r != CUDA_SUCCESS {
        return Err(Unavailable::InitFailed(error_name(&api, r)));
    }
    let mut version = 0;
    // SAFETY: the out-pointer is a live local.
    let r = unsafe { (api.driver_get_version)(&mut version) };
    if r != CUDA_SUCCESS {
        return Err(Unavailable::InitFailed(error_name(&api, r)));
    }
    if version < MIN_DRIVER_VERSION {
        return Err(Unavailable::DriverTooOld {
            found: version_string(version),
            needed: version_string(MIN_DRIVER_VERSION),
        });
    }
    let mut count = 0;
    // SAFETY: the out-pointer is a live local.
    let r = unsafe { (api.device_get_count)(&mut count) };
    if r != CUDA_SUCCESS {
        return Err(Unavailable::InitFailed(error_name(&api, r)));
    }
    if count <= 0 {
        return Err(Unavailable::NoDevice);
    }
    Ok(Driver {
        api,
        version,
        device_count: count as usize,
    })
}

/// `12040` → `"12.4"`.
pub fn version_string(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

static DRIVER: OnceLock<std::result::Result<Driver, Unavailable>> = OnceLock::new();

/// The process's driver, loaded on first use (then fixed for the process).
pub fn driver() -> std::result::Result<&'static Driver, Unavailable> {
    DRIVER
        .get_or_init(|| open(&driver_path()))
        .as_ref()
        .map_err(Clone::clone)
}

/// The process's driver entry points, or why there are none.
pub fn api() -> Result<&'static Api> {
    Ok(&driver()?.api)
}

/// `cuGetErrorName` of `code` (or the number when the driver does not know it).
pub fn error_name(api: &Api, code: CUresult) -> String {
    let mut p: *const c_char = std::ptr::null();
    // SAFETY: the out-pointer is a live local; the driver returns a static string.
    let r = unsafe { (api.get_error_name)(code, &mut p) };
    if r == CUDA_SUCCESS && !p.is_null() {
        // SAFETY: the driver returned a NUL-terminated static string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    } else {
        format!("CUDA error {code}")
    }
}

/// `Ok(())` for `CUDA_SUCCESS`, else the error of `call` with `context`
/// (out-of-memory becomes [`CudaError::OutOfMemory`]).
pub fn check(
    api: &Api,
    call: &'static str,
    r: CUresult,
    context: impl FnOnce() -> String,
) -> Result<()> {
    if r == CUDA_SUCCESS {
        return Ok(());
    }
    if r == CUDA_ERROR_OUT_OF_MEMORY {
        return Err(CudaError::OutOfMemory {
            what: format!("{call}: {}", context()),
        });
    }
    let c = context();
    Err(CudaError::Driver {
        call,
        code: r,
        name: error_name(api, r),
        context: if c.is_empty() { c } else { format!(" ({c})") },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_says_so() {
        let e = open("/nonexistent/libcuda.so.1").err().unwrap();
        assert!(matches!(e, Unavailable::NoLibrary(_)), "{e}");
        assert!(e.to_string().contains("FRAMEBUS_CUDA_DRIVER"), "{e}");
    }

    #[test]
    fn library_without_the_entry_points_is_too_old() {
        // libc is a shared library with none of the driver's symbols.
        let e = open("libc.so.6").err().unwrap();
        assert!(
            matches!(&e, Unavailable::MissingSymbol { symbol, .. } if symbol == "cuInit"),
            "{e}"
        );
    }

    #[test]
    fn versions_read_like_cuda_names_them() {
        assert_eq!(version_string(12040), "12.4");
        assert_eq!(version_string(11000), "11.0");
    }
}
