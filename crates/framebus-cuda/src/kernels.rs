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
//!
//! Two more kernels resize and/or write NV12 ([`Resample`]'s parameters):
//! * `framebus_resample`: bilinear or area resize (`framebus_kernels::resize`'s
//!   integer maths: 11-bit weights per axis computed from the same integer
//!   formulas as `Axis::bilinear` / `Axis::area`, `(Σ wy·Σ wx·p + 2^21) >> 22`),
//!   then the conversion of the row kernels (copy, RGB, BGR, GRAY, CHW float);
//! * `framebus_resample_nv12`: the same resampling, then BT.601/BT.709
//!   limited/full NV12 from each 2×2 block with the CPU kernels' 15-bit luma and
//!   17-bit chroma weights (`framebus_kernels::yuv_weights`), passed by the caller.
//!
//! Integer maths throughout (the float kernel's resampled bytes too), so the
//! results equal the CPU kernels' bit for bit.

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

/// Kernel names: the four of [`Kernel`], then `framebus_resample` and
/// `framebus_resample_nv12`.
pub const NAMES: [&str; 6] = [
    "framebus_bgra_to_rgb",
    "framebus_bgra_to_bgr",
    "framebus_bgra_to_gray",
    "framebus_bgra_to_rgb_f32_chw",
    "framebus_resample",
    "framebus_resample_nv12",
];

const RESAMPLE: usize = 4;
const RESAMPLE_NV12: usize = 5;

/// What `framebus_resample` writes after resampling (the `mode` parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResampleOut {
    /// The source's format (`bpp` bytes a pixel: 1, 3 or 4).
    Same = 0,
    /// RGB from BGRA/BGRX.
    Rgb = 1,
    /// BGR from BGRA/BGRX.
    Bgr = 2,
    /// GRAY8 (full-range BT.601 luma) from BGRA/BGRX.
    Gray = 3,
    /// Planar RGB float32 with mean/std, from BGRA/BGRX.
    RgbF32Chw = 4,
}

/// NV12 weights: `framebus_kernels::yuv_weights(matrix, range)` — rows Y, U, V
/// of (R, G, B) weights in 1/32768 units — and the Y offset (16 or 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YuvWeights {
    pub k: [[i32; 3]; 3],
    pub y_offset: i32,
}

/// How the resampling kernels resize (`framebus_kernels::Method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResizeMethod {
    /// Linear interpolation between the 2×2 nearest source pixels.
    #[default]
    Bilinear,
    /// Area average (box filter for integer factors); best for downscaling.
    Area,
}

/// A resampling launch: `src` (`sw`×`sh`, `bpp` bytes a pixel, `src_pitch`)
/// → `dst` (`w`×`h`, `dst_pitch`).
#[derive(Clone, Copy, Debug)]
pub struct Resample {
    pub src: CUdeviceptr,
    pub src_pitch: usize,
    pub sw: usize,
    pub sh: usize,
    pub bpp: usize,
    pub dst: CUdeviceptr,
    pub dst_pitch: usize,
    pub w: usize,
    pub h: usize,
    pub method: ResizeMethod,
}

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

// Bilinear taps of output i along an axis of n_in -> n_out pixels, as
// framebus_kernels' Axis::bilinear: centres aligned, 11-bit weight f of the
// second tap (0: one tap), clamped at the edges.
__device__ __forceinline__ void fb_axis(int i, int n_in, int n_out, int* i0, int* i1, int* f) {
    long long num = (2LL * i + 1) * n_in - n_out, den = 2LL * n_out;
    if (num <= 0) { *i0 = 0; *i1 = 0; *f = 0; return; }
    long long x0 = num / den;
    int fx = (int)((num % den) * 2048 / den);
    if (x0 + 1 >= n_in || fx == 0) {
        int c = (int)(x0 < n_in - 1 ? x0 : n_in - 1);
        *i0 = c; *i1 = c; *f = 0; return;
    }
    *i0 = (int)x0; *i1 = (int)x0 + 1; *f = fx;
}

// Byte c of the resampled pixel whose taps are (x0, x1, fx) x (r0, r1, fy).
__device__ __forceinline__ int fb_sample(const unsigned char* r0, const unsigned char* r1,
                                         int x0, int x1, int fx, int fy, int bpp, int c) {
    unsigned a = (2048u - fx) * r0[x0 * bpp + c] + (unsigned)fx * r0[x1 * bpp + c];
    unsigned b = (2048u - fx) * r1[x0 * bpp + c] + (unsigned)fx * r1[x1 * bpp + c];
    return (int)(((2048u - fy) * a + (unsigned)fy * b + (1u << 21)) >> 22);
}

// Area (box) taps of output i along an axis, as framebus_kernels' Axis::area:
// output i covers [i*n_in, (i+1)*n_in) in 1/n_out source pixels; the weight of
// source j is floor(overlap * 2048 / n_in); the remainder to 2048 goes to the
// first tap of the largest overlap.
__device__ __forceinline__ void fb_area_axis(int i, int n_in, int n_out, int* j0, int* n, int* at, int* rem) {
    long long lo = (long long)i * n_in, hi = lo + n_in;
    long long a = lo / n_out, b = (hi - 1) / n_out, best = -1;
    int sum = 0;
    for (long long j = a; j <= b; j++) {
        long long r = (hi < (j + 1) * n_out ? hi : (j + 1) * n_out) - (lo > j * n_out ? lo : j * n_out);
        sum += (int)(r * 2048 / n_in);
        if (r > best) { best = r; *at = (int)(j - a); }
    }
    *j0 = (int)a; *n = (int)(b - a + 1); *rem = 2048 - sum;
}

__device__ __forceinline__ unsigned fb_area_w(int i, int n_in, int n_out, int j) {
    long long lo = (long long)i * n_in, hi = lo + n_in;
    long long r = (hi < (j + 1LL) * n_out ? hi : (j + 1LL) * n_out) - (lo > (long long)j * n_out ? lo : (long long)j * n_out);
    return (unsigned)(r * 2048 / n_in);
}

// Byte c of the area-resampled pixel (x, y).
__device__ __forceinline__ int fb_area(const unsigned char* src, int pitch, int sw, int sh, int w, int h,
                       int x, int y, int bpp, int c) {
    int xj0, xn, xat = 0, xrem, yj0, yn, yat = 0, yrem;
    fb_area_axis(x, sw, w, &xj0, &xn, &xat, &xrem);
    fb_area_axis(y, sh, h, &yj0, &yn, &yat, &yrem);
    unsigned acc = 0;
    for (int ty = 0; ty < yn; ty++) {
        unsigned wy = fb_area_w(y, sh, h, yj0 + ty) + (ty == yat ? yrem : 0);
        const unsigned char* row = src + (size_t)(yj0 + ty) * pitch;
        unsigned hs = 0;
        for (int tx = 0; tx < xn; tx++) {
            unsigned wx = fb_area_w(x, sw, w, xj0 + tx) + (tx == xat ? xrem : 0);
            hs += wx * row[(size_t)(xj0 + tx) * bpp + c];
        }
        acc += wy * hs;
    }
    return (int)((acc + (1u << 21)) >> 22);
}

#define FB_RS_PARAMS const unsigned char* __restrict__ src, int src_pitch, int sw, int sh, \
    int bpp, unsigned char* __restrict__ dst, int dst_pitch, int w, int h

// Resize (bilinear, or area when `area`), then: mode 0 the source's format,
// 1 RGB, 2 BGR, 3 GRAY8, 4 RGB float32 CHW with mean/std (modes 1-4 read
// BGRA/BGRX).
extern "C" __global__ void framebus_resample(FB_RS_PARAMS, int mode,
    float m0, float m1, float m2, float s0, float s1, float s2, int area) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    if (x >= w) return;
    int x0, x1, fx;
    fb_axis(x, sw, w, &x0, &x1, &fx);
    for (int y = blockIdx.y * blockDim.y + threadIdx.y; y < h; y += gridDim.y * blockDim.y) {
        int y0, y1, fy;
        fb_axis(y, sh, h, &y0, &y1, &fy);
        const unsigned char* r0 = src + (size_t)y0 * src_pitch;
        const unsigned char* r1 = src + (size_t)y1 * src_pitch;
        unsigned char* d = dst + (size_t)y * dst_pitch;
#define FB_PX(c) (area ? fb_area(src, src_pitch, sw, sh, w, h, x, y, bpp, c) \
                         : fb_sample(r0, r1, x0, x1, fx, fy, bpp, c))
        if (mode == 0) {
            for (int c = 0; c < bpp; c++) d[(size_t)x * bpp + c] = (unsigned char)FB_PX(c);
            continue;
        }
        int b = FB_PX(0), g = FB_PX(1), r = FB_PX(2);
#undef FB_PX
        if (mode == 1) { d[3 * (size_t)x] = r; d[3 * (size_t)x + 1] = g; d[3 * (size_t)x + 2] = b; }
        else if (mode == 2) { d[3 * (size_t)x] = b; d[3 * (size_t)x + 1] = g; d[3 * (size_t)x + 2] = r; }
        else if (mode == 3) {
            int v = (9798 * r + 19234 * g + 3736 * b + 16384) >> 15;
            d[x] = (unsigned char)(v > 255 ? 255 : v);
        } else {
            float* o = (float*)dst;
            size_t plane = (size_t)w * h, i = (size_t)y * w + x;
            o[i]             = ((float)r / 255.0f - m0) / s0;
            o[plane + i]     = ((float)g / 255.0f - m1) / s1;
            o[2 * plane + i] = ((float)b / 255.0f - m2) / s2;
        }
    }
}

__device__ __forceinline__ unsigned char fb_clamp(int v) {
    return (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Resize (bilinear or area; the identity when the sizes match), then NV12: one thread
// per 2x2 block; Y = (ky.rgb + y_add) >> 15 per pixel, U/V from the block's
// sums: (k.sum + c_add) >> 17. Y plane: h rows of dst_pitch; then h/2 rows of
// interleaved U, V.
extern "C" __global__ void framebus_resample_nv12(FB_RS_PARAMS,
    int yr, int yg, int yb, int ur, int ug, int ub, int vr, int vg, int vb,
    int y_add, int c_add, int area) {
    int bx = blockIdx.x * blockDim.x + threadIdx.x;
    if (2 * bx >= w) return;
    int xs0[2], xs1[2], fxs[2];
#pragma unroll
    for (int k = 0; k < 2; k++) fb_axis(2 * bx + k, sw, w, &xs0[k], &xs1[k], &fxs[k]);
    unsigned char* uvp = dst + (size_t)h * dst_pitch;
    for (int by = blockIdx.y * blockDim.y + threadIdx.y; 2 * by < h; by += gridDim.y * blockDim.y) {
        int sr = 0, sg = 0, sb = 0;
#pragma unroll
        for (int j = 0; j < 2; j++) {
            int y = 2 * by + j, y0, y1, fy;
            fb_axis(y, sh, h, &y0, &y1, &fy);
            const unsigned char* r0 = src + (size_t)y0 * src_pitch;
            const unsigned char* r1 = src + (size_t)y1 * src_pitch;
#pragma unroll
            for (int k = 0; k < 2; k++) {
#define FB_PX(c) (area ? fb_area(src, src_pitch, sw, sh, w, h, 2 * bx + k, y, bpp, c) \
                         : fb_sample(r0, r1, xs0[k], xs1[k], fxs[k], fy, bpp, c))
                int b = FB_PX(0), g = FB_PX(1), r = FB_PX(2);
#undef FB_PX
                dst[(size_t)y * dst_pitch + 2 * bx + k] = fb_clamp((yr * r + yg * g + yb * b + y_add) >> 15);
                sr += r; sg += g; sb += b;
            }
        }
        unsigned char* uv = uvp + (size_t)by * dst_pitch + 2 * (size_t)bx;
        uv[0] = fb_clamp((ur * sr + ug * sg + ub * sb + c_add) >> 17);
        uv[1] = fb_clamp((vr * sr + vg * sg + vb * sb + c_add) >> 17);
    }
}
"#;

/// The loaded module of one device.
pub struct Module {
    _module: CUmodule,
    funcs: [CUfunction; NAMES.len()],
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
    let mut funcs = [std::ptr::null_mut(); NAMES.len()];
    for (f, name) in funcs.iter_mut().zip(NAMES) {
        let c = CString::new(name)
            .map_err(|_| CudaError::invalid("kernel name", name, "contains NUL"))?;
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

/// One kernel parameter (by value).
enum Arg {
    Ptr(CUdeviceptr),
    I32(i32),
    F32(f32),
}

impl Arg {
    fn as_ptr(&mut self) -> *mut c_void {
        match self {
            Arg::Ptr(p) => (p as *mut CUdeviceptr).cast(),
            Arg::I32(v) => (v as *mut i32).cast(),
            Arg::F32(v) => (v as *mut f32).cast(),
        }
    }
}

fn to_i32(what: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| CudaError::invalid(what, v, "too large for the kernels"))
}

/// Queue function `f` of the device's module on `stream` over a grid of
/// `cols` × `rows` threads (rows loop inside the kernels, so the grid's y
/// stays within its limit).
fn launch_args(
    dev: &Device,
    f: usize,
    stream: StreamHandle,
    cols: usize,
    rows: usize,
    args: &mut [Arg],
) -> Result<()> {
    let m = module(dev)?;
    let api = dev.bind()?;
    let mut params: Vec<*mut c_void> = args.iter_mut().map(Arg::as_ptr).collect();
    let (bx, by) = (32u32, 8u32);
    let gx = u32::try_from(cols.div_ceil(bx as usize).max(1))
        .map_err(|_| CudaError::invalid("width", cols, "too large for the kernels"))?;
    let gy = rows.div_ceil(by as usize).clamp(1, 65535) as u32;
    // SAFETY: `params` points at live values (`args`, borrowed for the call)
    // matching the kernel's parameters in order and type (the callers below
    // build them from the kernel's signature); the driver copies them before
    // returning. The device pointers among them are buffers of this context
    // large enough for the geometry (the callers' contract).
    let r = unsafe {
        (api.launch_kernel)(
            m.funcs[f],
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
    check(api, "cuLaunchKernel", r, || NAMES[f].to_owned())
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
    let [m0, m1, m2] = mean;
    let [s0, s1, s2] = std;
    let mut args = [
        Arg::Ptr(src),
        Arg::I32(to_i32("pitch", src_pitch)?),
        Arg::Ptr(dst),
        Arg::I32(to_i32("pitch", dst_pitch)?),
        Arg::I32(to_i32("width", w)?),
        Arg::I32(to_i32("height", h)?),
        Arg::F32(m0),
        Arg::F32(m1),
        Arg::F32(m2),
        Arg::F32(s0),
        Arg::F32(s1),
        Arg::F32(s2),
    ];
    launch_args(dev, k as usize, stream, w, h, &mut args)
}

impl Resample {
    fn args(&self) -> Result<Vec<Arg>> {
        Ok(vec![
            Arg::Ptr(self.src),
            Arg::I32(to_i32("pitch", self.src_pitch)?),
            Arg::I32(to_i32("width", self.sw)?),
            Arg::I32(to_i32("height", self.sh)?),
            Arg::I32(to_i32("bytes per pixel", self.bpp)?),
            Arg::Ptr(self.dst),
            Arg::I32(to_i32("pitch", self.dst_pitch)?),
            Arg::I32(to_i32("width", self.w)?),
            Arg::I32(to_i32("height", self.h)?),
        ])
    }
}

/// Queue `framebus_resample` on `stream`: resize `r.src` to `r.dst`'s size and
/// write `out` (mean/std for [`ResampleOut::RgbF32Chw`]).
pub fn launch_resample(
    dev: &Device,
    stream: StreamHandle,
    r: &Resample,
    out: ResampleOut,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<()> {
    let mut args = r.args()?;
    args.push(Arg::I32(out as i32));
    args.extend(mean.into_iter().chain(std).map(Arg::F32));
    args.push(Arg::I32((r.method == ResizeMethod::Area) as i32));
    launch_args(dev, RESAMPLE, stream, r.w, r.h, &mut args)
}

/// Queue `framebus_resample_nv12` on `stream`: resize `r.src` (BGRA/BGRX) to
/// `r.dst`'s size (even) as NV12 with weights `k`.
pub fn launch_nv12(dev: &Device, stream: StreamHandle, r: &Resample, k: &YuvWeights) -> Result<()> {
    let mut args = r.args()?;
    args.extend(k.k.iter().flatten().map(|&v| Arg::I32(v)));
    // framebus_kernels' y_add and c_add: offset and rounding before the
    // 15-bit (luma) and 17-bit (2x2 chroma sum) shifts.
    args.push(Arg::I32((k.y_offset << 15) + (1 << 14)));
    args.push(Arg::I32((128 << 17) + (1 << 16)));
    args.push(Arg::I32((r.method == ResizeMethod::Area) as i32));
    launch_args(dev, RESAMPLE_NV12, stream, r.w / 2, r.h / 2, &mut args)
}
