//! framebus's GPU kernels: CUDA C source compiled by NVRTC at first use (once
//! per device and process), loaded with `cuModuleLoadData`.
//!
//! Every kernel reads BGRA/BGRX bytes and has the same parameter list
//! (`src, src_pitch, dst, dst_pitch, w, h, mean[3], std[3]`), so the launch
//! code (and the fake driver's CPU reference) is one. The arithmetic is
//! framebus's CPU kernels' (`framebus-kernels`), so the results are equal:
//! * GRAY: full-range BT.601 luma, `(9798 R + 19234 G + 3736 B + 16384) >> 15`;
//! * RGB_F32_CHW: `(v / 255 - mean[c]) / std[c]`, each step in f32, no FMA
//!   contraction (`--fmad=false`), IEEE division (`--prec-div=true`).

use crate::device::{Device, StreamHandle};
use crate::driver::{check, CUdeviceptr, CUfunction, CUmodule};
use crate::error::{CudaError, Result};
use std::ffi::{c_void, CString};

/// The conversions the kernels do (all from BGRA/BGRX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Rgb = 0,
    Bgr = 1,
    Gray = 2,
    RgbF32Chw = 3,
}

/// Kernel names, indexed by [`Kernel`].
pub const NAMES: [&str; 4] = [
    "framebus_bgra_to_rgb",
    "framebus_bgra_to_bgr",
    "framebus_bgra_to_gray",
    "framebus_bgra_to_rgb_f32_chw",
];

/// The kernels' CUDA C source.
pub const SOURCE: &str = r#"
// framebus GPU kernels (compiled by NVRTC at first use). Source: BGRA/BGRX.
// One thread per pixel column x; rows in a grid-stride loop, so any height
// fits the grid's y limit (65535 blocks).
#define FB_PARAMS const unsigned char* __restrict__ src, int src_pitch, \
    unsigned char* __restrict__ dst, int dst_pitch, int w, int h, \
    float m0, float m1, float m2, float s0, float s1, float s2
#define FB_FOR_ROWS int x = blockIdx.x * blockDim.x + threadIdx.x; \
    if (x >= w) return; \
    for (int y = blockIdx.y * blockDim.y + threadIdx.y; y < h; y += gridDim.y * blockDim.y)
#define FB_SRC const unsigned char* p = src + (size_t)y * src_pitch + 4 * (size_t)x;

extern "C" __global__ void framebus_bgra_to_rgb(FB_PARAMS) {
    FB_FOR_ROWS {
        FB_SRC
        unsigned char* d = dst + (size_t)y * dst_pitch + 3 * (size_t)x;
        d[0] = p[2]; d[1] = p[1]; d[2] = p[0];
    }
}

extern "C" __global__ void framebus_bgra_to_bgr(FB_PARAMS) {
    FB_FOR_ROWS {
        FB_SRC
        unsigned char* d = dst + (size_t)y * dst_pitch + 3 * (size_t)x;
        d[0] = p[0]; d[1] = p[1]; d[2] = p[2];
    }
}

extern "C" __global__ void framebus_bgra_to_gray(FB_PARAMS) {
    FB_FOR_ROWS {
        FB_SRC
        int v = (9798 * p[2] + 19234 * p[1] + 3736 * p[0] + 16384) >> 15;
        dst[(size_t)y * dst_pitch + x] = (unsigned char)(v > 255 ? 255 : v);
    }
}

extern "C" __global__ void framebus_bgra_to_rgb_f32_chw(FB_PARAMS) {
    float* o = (float*)dst;
    size_t plane = (size_t)w * h;
    FB_FOR_ROWS {
        FB_SRC
        size_t i = (size_t)y * w + x;
        o[i]             = ((float)p[2] / 255.0f - m0) / s0;
        o[plane + i]     = ((float)p[1] / 255.0f - m1) / s1;
        o[2 * plane + i] = ((float)p[0] / 255.0f - m2) / s2;
    }
}
"#;

/// The loaded module of one device.
pub struct Module {
    _module: CUmodule,
    funcs: [CUfunction; 4],
    /// The architecture the PTX was compiled for.
    pub arch: String,
}

// SAFETY: module and function handles may be used from any thread.
unsafe impl Send for Module {}
// SAFETY: as above; launching does not mutate the handles.
unsafe impl Sync for Module {}

/// Compile [`SOURCE`] for `arch` (e.g. `"compute_75"`, `"sm_90"`): PTX.
pub fn compile(arch: &str) -> Result<Vec<u8>> {
    crate::nvrtc::compile(SOURCE, "framebus_kernels.cu", arch)
}

fn module(dev: &Device) -> Result<&Module> {
    if let Some(m) = dev.kernels.get() {
        return Ok(m);
    }
    let (ma, mi) = dev.compute_capability;
    let arch = format!("compute_{ma}{mi}");
    // A device newer than this NVRTC: PTX for the oldest architecture we
    // support runs everywhere after the driver's JIT.
    let (ptx, arch) = match compile(&arch) {
        Ok(p) => (p, arch),
        Err(CudaError::Compile { .. }) => (compile("compute_75")?, "compute_75".to_owned()),
        Err(e) => return Err(e),
    };
    let api = dev.bind()?;
    let mut m: CUmodule = std::ptr::null_mut();
    // SAFETY: `ptx` is a NUL-terminated PTX image; the context is current.
    let r = unsafe { (api.module_load_data)(&mut m, ptx.as_ptr().cast()) };
    check(api, "cuModuleLoadData", r, || {
        format!("framebus kernels for {arch}")
    })?;
    let mut funcs = [std::ptr::null_mut(); 4];
    for (f, name) in funcs.iter_mut().zip(NAMES) {
        let c = CString::new(name).expect("no NUL in kernel names");
        // SAFETY: out-pointer is a live local; module is loaded.
        let r = unsafe { (api.module_get_function)(f, m, c.as_ptr()) };
        check(api, "cuModuleGetFunction", r, || name.to_owned())?;
    }
    Ok(dev.kernels.get_or_init(|| Module {
        _module: m,
        funcs,
        arch,
    }))
}

/// The architecture the device's kernels were compiled for (compiling them now).
pub fn loaded_arch(dev: &Device) -> Result<String> {
    Ok(module(dev)?.arch.clone())
}

/// Queue `k` on `stream`: `src` (BGRA, `src_pitch`) → `dst` (`dst_pitch`).
#[allow(clippy::too_many_arguments)]
pub fn launch(
    dev: &Device,
    k: Kernel,
    stream: StreamHandle,
    src: CUdeviceptr,
    src_pitch: usize,
    dst: CUdeviceptr,
    dst_pitch: usize,
    w: usize,
    h: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<()> {
    let m = module(dev)?;
    let api = dev.bind()?;
    let (mut src, mut dst) = (src, dst);
    let to_i32 = |what, v: usize| {
        i32::try_from(v).map_err(|_| CudaError::invalid(what, v, "too large for the kernels"))
    };
    let (mut sp, mut dp, mut wi, mut hi) = (
        to_i32("pitch", src_pitch)?,
        to_i32("pitch", dst_pitch)?,
        to_i32("width", w)?,
        to_i32("height", h)?,
    );
    let [mut m0, mut m1, mut m2] = mean;
    let [mut s0, mut s1, mut s2] = std;
    let mut params: [*mut c_void; 12] = [
        (&mut src as *mut CUdeviceptr).cast(),
        (&mut sp as *mut i32).cast(),
        (&mut dst as *mut CUdeviceptr).cast(),
        (&mut dp as *mut i32).cast(),
        (&mut wi as *mut i32).cast(),
        (&mut hi as *mut i32).cast(),
        (&mut m0 as *mut f32).cast(),
        (&mut m1 as *mut f32).cast(),
        (&mut m2 as *mut f32).cast(),
        (&mut s0 as *mut f32).cast(),
        (&mut s1 as *mut f32).cast(),
        (&mut s2 as *mut f32).cast(),
    ];
    let (bx, by) = (32u32, 8u32);
    let gx = w.div_ceil(bx as usize) as u32;
    // Rows loop inside the kernels: the grid's y stays within its limit.
    let gy = h.div_ceil(by as usize).min(65535) as u32;
    // SAFETY: `params` points at 12 live locals matching the kernel's
    // parameters in order and type; the driver copies them before returning.
    // `src`/`dst` are device buffers of this context large enough for the
    // geometry (the caller's contract).
    let r = unsafe {
        (api.launch_kernel)(
            m.funcs[k as usize],
            gx,
            gy,
            1,
            bx,
            by,
            1,
            0,
            stream as crate::driver::CUstream,
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    };
    check(api, "cuLaunchKernel", r, || NAMES[k as usize].to_owned())
}
