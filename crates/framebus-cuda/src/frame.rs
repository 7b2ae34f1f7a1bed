//! `CudaFrame`: a device buffer lease plus geometry, and the three ways
//! frames move: [`upload`] (host frame → device, optionally converted),
//! [`CudaFrame::download`] (device → a host pool slot) and [`CudaFrame::export`]
//! (to DLPack / `__cuda_array_interface__` consumers).
//!
//! Ordering rules (docs/gpu.md):
//! 1. An upload queues `cuMemcpyHtoDAsync` (and a conversion kernel) on a
//!    stream and records the frame's **ready event** after them. The host
//!    frame's lease is handed to [`crate::device::hold_until`] with that event:
//!    the slot returns to its pool only after the copy has completed.
//! 2. A consumer that names its stream is made to wait for the ready event
//!    (`cuStreamWaitEvent`) — no host synchronisation.
//! 3. A device buffer returns to its pool when the last export and the frame
//!    are gone, and is reused only after every fence completed (see
//!    [`crate::pool`]).

use crate::device::{self, Device, Event, StreamHandle};
use crate::driver::check;
use crate::error::{CudaError, Result};
use crate::kernels::{self, Kernel, Resample, ResampleOut, ResizeMethod, YuvWeights};
use crate::pool::{DeviceLease, DevicePool, Fence};
use framebus_core::{Frame, FramePool, PixelFormat};
use std::sync::Arc;
use std::time::Duration;

/// Pixel formats a `CudaFrame` can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceFormat {
    /// An 8-bit packed host format copied as it is.
    Packed(PixelFormat),
    /// Planar RGB float32, `(3, h, w)`, normalised with mean/std.
    RgbF32Chw,
}

impl DeviceFormat {
    /// Parse a format name: a host packed format or `"RGB_F32_CHW"`.
    pub fn parse(s: &str) -> Result<DeviceFormat> {
        if s.eq_ignore_ascii_case("RGB_F32_CHW") {
            return Ok(DeviceFormat::RgbF32Chw);
        }
        let f: PixelFormat = s.parse()?;
        DeviceFormat::packed(f)
    }

    fn packed(f: PixelFormat) -> Result<DeviceFormat> {
        use PixelFormat as P;
        match f {
            P::Bgra | P::Bgrx | P::Rgba | P::Rgb | P::Bgr | P::Gray8 | P::Nv12 => {
                Ok(DeviceFormat::Packed(f))
            }
            _ => Err(CudaError::invalid(
                "format",
                format!("{:?}", f.name()),
                "a CudaFrame holds BGRA, BGRX, RGBA, RGB, BGR, GRAY8, NV12 or RGB_F32_CHW",
            )),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            DeviceFormat::Packed(f) => f.name(),
            DeviceFormat::RgbF32Chw => "RGB_F32_CHW",
        }
    }

    /// Bytes of one sample (DLPack item size).
    pub fn sample_bytes(&self) -> usize {
        match self {
            DeviceFormat::Packed(_) => 1,
            DeviceFormat::RgbF32Chw => 4,
        }
    }

    /// True for float samples.
    pub fn is_float(&self) -> bool {
        matches!(self, DeviceFormat::RgbF32Chw)
    }

    fn channels(&self) -> usize {
        match self {
            DeviceFormat::Packed(f) => f.bytes_per_pixel(),
            DeviceFormat::RgbF32Chw => 3,
        }
    }
}

/// A frame in device memory.
#[derive(Clone)]
pub struct CudaFrame {
    lease: DeviceLease,
    pub width: usize,
    pub height: usize,
    /// Bytes from one row to the next (for RGB_F32_CHW: `4 * width`).
    pub pitch: usize,
    pub format: DeviceFormat,
    pub timestamp_ns: u64,
    pub seq: u64,
    /// Completes when the contents are ready.
    ready: Arc<Event>,
    /// The stream the contents were produced on.
    pub stream: StreamHandle,
}

impl std::fmt::Debug for CudaFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaFrame({}x{} {} on cuda:{})",
            self.width,
            self.height,
            self.format.name(),
            self.lease.device().index
        )
    }
}

/// What [`upload`] does.
#[derive(Clone, Debug)]
pub struct Upload {
    /// The caller's stream, or `None` for framebus's stream of the device.
    pub stream: Option<StreamHandle>,
    /// Convert to this format on the GPU (`None`: copy as it is).
    pub format: Option<DeviceFormat>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Resize to `(width, height)` on the GPU.
    pub size: Option<(usize, usize)>,
    /// How `size` resizes.
    pub method: ResizeMethod,
    /// NV12's weights (`framebus_kernels::yuv_weights`); needed for NV12 output.
    pub yuv: Option<YuvWeights>,
}

impl Default for Upload {
    fn default() -> Self {
        Upload {
            stream: None,
            format: None,
            mean: [0.0; 3],
            std: [1.0; 3],
            size: None,
            method: ResizeMethod::Bilinear,
            yuv: None,
        }
    }
}

/// The kernel an upload runs after its copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// None: the copy is the frame.
    Copy,
    /// A same-size conversion kernel.
    Convert(Kernel),
    /// `framebus_resample` writing this.
    Resample(ResampleOut),
    /// `framebus_resample_nv12` (resized or not).
    Nv12(YuvWeights),
}

/// What an upload of one frame needs: the buffers to lease and the kernel.
#[derive(Clone, Copy, Debug)]
pub struct UploadPlan {
    /// Bytes of the device buffer the host frame is copied into.
    pub staging_bytes: usize,
    /// Bytes of the conversion's output buffer (`None`: no conversion, the
    /// staging buffer is the frame).
    pub out_bytes: Option<usize>,
    step: Step,
    target: DeviceFormat,
    out_pitch: usize,
    /// The output's size.
    pub width: usize,
    pub height: usize,
}

/// Check `opts` against `frame` and say what the upload needs.
pub fn plan(frame: &Frame, opts: &Upload) -> Result<UploadPlan> {
    let l = *frame.layout();
    let src_fmt = DeviceFormat::packed(l.format)?;
    let target = opts.format.unwrap_or(src_fmt);
    if let Some(s) = opts.std.iter().find(|s| **s == 0.0 || !s.is_finite()) {
        return Err(CudaError::invalid("std", s, "must be finite and non-zero"));
    }
    if let Some(m) = opts.mean.iter().find(|m| !m.is_finite()) {
        return Err(CudaError::invalid("mean", m, "must be finite"));
    }
    let (w, h) = opts.size.unwrap_or((l.width, l.height));
    let resized = (w, h) != (l.width, l.height);
    // The output's layout, checked like a host frame's (sizes, NV12's even sides).
    let out_fmt = match target {
        DeviceFormat::Packed(f) => f,
        DeviceFormat::RgbF32Chw => PixelFormat::Rgb,
    };
    framebus_core::FrameLayout::new(w, h, out_fmt, None).map_err(|e| {
        CudaError::invalid(
            "size",
            format!("({w}, {h})"),
            format!("for {}: {e}", target.name()),
        )
    })?;
    let staging_bytes = l.byte_len();
    let bgra = matches!(l.format, PixelFormat::Bgra | PixelFormat::Bgrx);
    let same_bytes = target == src_fmt
        || (bgra
            && matches!(
                target,
                DeviceFormat::Packed(PixelFormat::Bgra | PixelFormat::Bgrx)
            ));
    let plan = |step, out_bytes, out_pitch| {
        Ok(UploadPlan {
            staging_bytes,
            out_bytes,
            step,
            target,
            out_pitch,
            width: w,
            height: h,
        })
    };
    if same_bytes && !resized {
        return plan(Step::Copy, None, l.stride);
    }
    if l.format == PixelFormat::Nv12 {
        return Err(CudaError::invalid(
            if resized { "size" } else { "format" },
            format!(
                "{:?}",
                if resized {
                    format!("({w}, {h})")
                } else {
                    target.name().into()
                }
            ),
            "an NV12 frame uploads as it is (GPU resizing and conversion read 8-bit packed frames)",
        ));
    }
    let need_bgra = || {
        if bgra {
            Ok(())
        } else {
            Err(CudaError::invalid(
                "format",
                format!("{:?}", target.name()),
                format!(
                    "GPU conversion reads BGRA or BGRX frames, this one is {}",
                    l.format.name()
                ),
            ))
        }
    };
    if target == DeviceFormat::Packed(PixelFormat::Nv12) {
        need_bgra()?;
        let k = opts.yuv.ok_or_else(|| {
            CudaError::invalid("yuv", "None", "NV12 output needs the YUV weights")
        })?;
        return plan(Step::Nv12(k), Some(w * h * 3 / 2), w);
    }
    if resized && target == src_fmt {
        let bpp = l.format.bytes_per_pixel();
        return plan(
            Step::Resample(ResampleOut::Same),
            Some(bpp * w * h),
            bpp * w,
        );
    }
    need_bgra()?;
    let (kernel, out, pitch, len) = match target {
        DeviceFormat::Packed(PixelFormat::Rgb) => (Kernel::Rgb, ResampleOut::Rgb, 3 * w, 3 * w * h),
        DeviceFormat::Packed(PixelFormat::Bgr) => (Kernel::Bgr, ResampleOut::Bgr, 3 * w, 3 * w * h),
        DeviceFormat::Packed(PixelFormat::Gray8) => (Kernel::Gray, ResampleOut::Gray, w, w * h),
        DeviceFormat::RgbF32Chw => (Kernel::RgbF32Chw, ResampleOut::RgbF32Chw, 4 * w, 12 * w * h),
        t => {
            return Err(CudaError::invalid(
                "format",
                format!("{:?}", t.name()),
                if resized {
                    "GPU resizing keeps the frame's format or makes RGB, BGR, GRAY8, NV12 or \
                     RGB_F32_CHW from BGRA/BGRX"
                } else {
                    "GPU conversion from BGRA makes RGB, BGR, GRAY8, NV12 or RGB_F32_CHW"
                },
            ))
        }
    };
    let step = if resized {
        Step::Resample(out)
    } else {
        Step::Convert(kernel)
    };
    plan(step, Some(len), pitch)
}

/// Copy `frame` into a buffer of `pool` on `pool`'s device, asynchronously,
/// converting it on the way when asked. Returns at once; the result's ready
/// event completes when the copy (and kernel) have. The host frame's lease is
/// held until then (module doc, rule 1). Acquires block as `pool`'s policy says.
pub fn upload(frame: &Frame, pool: &DevicePool, opts: &Upload) -> Result<CudaFrame> {
    let p = plan(frame, opts)?;
    let stream = match opts.stream {
        Some(s) => s,
        None => pool.device().stream()?,
    };
    let staging = pool.acquire(p.staging_bytes, Some(stream))?;
    let out = p
        .out_bytes
        .map(|n| pool.acquire(n, Some(stream)))
        .transpose()?;
    let opts = Upload {
        stream: Some(stream),
        ..opts.clone()
    };
    upload_leased(frame, &p, staging, out, &opts)
}

/// [`upload`] into buffers the caller leased as `plan` said (so that the
/// caller can wait for them its own way, e.g. interruptibly). Buffers leased
/// with a stream (stream-ordered reuse) must be used on that stream: pass it
/// in `opts.stream`.
pub fn upload_leased(
    frame: &Frame,
    plan: &UploadPlan,
    staging: DeviceLease,
    out: Option<DeviceLease>,
    opts: &Upload,
) -> Result<CudaFrame> {
    let l = *frame.layout();
    let dev = staging.device().clone();
    if staging.capacity() < plan.staging_bytes
        || out.as_ref().map(|o| o.capacity()) < plan.out_bytes
        || out.as_ref().is_some_and(|o| !Arc::ptr_eq(o.device(), &dev))
    {
        return Err(CudaError::invalid(
            "buffers",
            format!("{staging:?}, {out:?}"),
            "smaller than the plan, or on another device",
        ));
    }
    let api = dev.bind()?;
    let stream = match opts.stream {
        Some(s) => s,
        None => dev.stream()?,
    };
    let bytes = plan.staging_bytes;
    // SAFETY: the source is `bytes` readable bytes of a live slot whose lease
    // we keep (hold_until below) until the copy's event has completed;
    // `staging` is a device buffer of at least `bytes` bytes.
    let r = unsafe {
        (api.memcpy_htod_async)(
            staging.ptr(),
            frame.as_ptr() as *const std::ffi::c_void,
            bytes,
            stream as crate::driver::CUstream,
        )
    };
    check(api, "cuMemcpyHtoDAsync", r, || {
        format!("{bytes} bytes to cuda:{}", dev.index)
    })?;
    let rs = |out: &DeviceLease| Resample {
        src: staging.ptr(),
        src_pitch: l.stride,
        sw: l.width,
        sh: l.height,
        bpp: l.format.bytes_per_pixel(),
        dst: out.ptr(),
        dst_pitch: plan.out_pitch,
        w: plan.width,
        h: plan.height,
        method: opts.method,
    };
    let out = match (plan.step, out) {
        (Step::Copy, _) | (_, None) => staging.clone(),
        (Step::Convert(k), Some(out)) => {
            kernels::launch(
                &dev,
                k,
                stream,
                staging.ptr(),
                l.stride,
                out.ptr(),
                plan.out_pitch,
                l.width,
                l.height,
                opts.mean,
                opts.std,
            )?;
            out
        }
        (Step::Resample(o), Some(out)) => {
            kernels::launch_resample(&dev, stream, &rs(&out), o, opts.mean, opts.std)?;
            out
        }
        (Step::Nv12(k), Some(out)) => {
            kernels::launch_nv12(&dev, stream, &rs(&out), &k)?;
            out
        }
    };
    let ready = Event::record_on(&dev, stream)?;
    staging.add_fence(Fence::Event(ready.clone()));
    out.add_fence(Fence::Event(ready.clone()));
    drop(staging);
    device::hold_until(ready.clone(), Box::new(frame.clone()));
    Ok(CudaFrame {
        lease: out,
        width: plan.width,
        height: plan.height,
        pitch: plan.out_pitch,
        format: plan.target,
        timestamp_ns: frame.timestamp_ns(),
        seq: frame.seq(),
        ready,
        stream,
    })
}

/// A download in flight: the host frame and the event of its copy.
pub struct Download {
    frame: Frame,
    done: Arc<Event>,
}

impl Download {
    /// Wait up to `slice`; the frame once the copy has completed.
    pub fn wait(&self, slice: Duration) -> Result<bool> {
        self.done.wait_for(slice)
    }
    /// The host frame (call after [`Download::wait`] returned true).
    pub fn into_frame(self) -> Frame {
        self.frame
    }
}

/// How a consumer of an export synchronises (the DLPack `stream` argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumer {
    /// The consumer's work goes on this stream: it waits for the ready event
    /// now, and an event recorded on it when the export is released fences
    /// the buffer's reuse.
    Stream(StreamHandle),
    /// No synchronisation (`stream=-1`, or CAI): the consumer synchronises
    /// itself; the buffer's reuse is fenced by a context synchronisation.
    Unsynchronised,
}

/// One export's claim on a frame's buffer; dropping it releases the export
/// (from any thread, without the GIL).
pub struct ExportGuard {
    lease: DeviceLease,
    consumer: Consumer,
}

impl Drop for ExportGuard {
    fn drop(&mut self) {
        let fence = match self.consumer {
            Consumer::Stream(s) => Event::record_on(self.lease.device(), s)
                .map(Fence::Event)
                .unwrap_or(Fence::Context),
            Consumer::Unsynchronised => Fence::Context,
        };
        self.lease.add_fence(fence);
    }
}

impl CudaFrame {
    pub fn device(&self) -> &Arc<Device> {
        self.lease.device()
    }
    pub fn ptr(&self) -> u64 {
        self.lease.ptr()
    }
    pub fn lease(&self) -> &DeviceLease {
        &self.lease
    }
    /// Bytes of the image (`pitch * height`, times 3 planes for CHW, times
    /// 3/2 for NV12).
    pub fn byte_len(&self) -> usize {
        match self.format {
            DeviceFormat::RgbF32Chw => 3 * self.pitch * self.height,
            DeviceFormat::Packed(PixelFormat::Nv12) => self.pitch * self.height * 3 / 2,
            _ => self.pitch * self.height,
        }
    }
    /// Shape in samples: `(h, w, c)`, `(h, w)` for GRAY8, `(3, h, w)` for CHW,
    /// `(h * 3 / 2, w)` for NV12 (the Y rows, then the interleaved U/V rows:
    /// the layout hardware encoders take).
    pub fn shape(&self) -> Vec<usize> {
        match self.format {
            DeviceFormat::RgbF32Chw => vec![3, self.height, self.width],
            DeviceFormat::Packed(PixelFormat::Nv12) => vec![self.height * 3 / 2, self.width],
            f if f.channels() == 1 => vec![self.height, self.width],
            f => vec![self.height, self.width, f.channels()],
        }
    }
    /// Strides in samples, matching [`CudaFrame::shape`].
    pub fn strides(&self) -> Vec<usize> {
        match self.format {
            DeviceFormat::RgbF32Chw => vec![self.width * self.height, self.width, 1],
            f if f.channels() == 1 => vec![self.pitch, 1],
            f => vec![self.pitch, f.channels(), 1],
        }
    }
    /// True once the contents are ready (the ready event completed).
    pub fn is_ready(&self) -> Result<bool> {
        self.ready.query()
    }
    /// Wait up to `limit` for the contents; true when ready.
    pub fn wait_ready(&self, limit: Duration) -> Result<bool> {
        self.ready.wait_for(limit)
    }
    /// A claim for one consumer, after making its stream wait for the contents.
    pub fn export(&self, consumer: Consumer) -> Result<ExportGuard> {
        if let Consumer::Stream(s) = consumer {
            self.device().stream_wait(s, &self.ready)?;
        }
        Ok(ExportGuard {
            lease: self.lease.clone(),
            consumer,
        })
    }
    /// The host layout [`CudaFrame::download_into`] needs (8-bit formats only).
    pub fn host_layout(&self) -> Result<framebus_core::FrameLayout> {
        let DeviceFormat::Packed(fmt) = self.format else {
            return Err(CudaError::invalid(
                "format",
                "\"RGB_F32_CHW\"",
                "to_host copies 8-bit frames; read float tensors through DLPack",
            ));
        };
        Ok(framebus_core::FrameLayout::new(
            self.width,
            self.height,
            fmt,
            Some(self.pitch),
        )?)
    }

    /// Start copying the frame into a slot of `pool` (8-bit formats only).
    pub fn download(&self, pool: &FramePool) -> Result<Download> {
        let l = self.host_layout()?;
        let frame = pool.acquire_frame(l.width, l.height, l.format, Some(l.stride))?;
        self.download_into(frame)
    }

    /// Start copying the frame into `frame` (of [`CudaFrame::host_layout`]).
    pub fn download_into(&self, frame: Frame) -> Result<Download> {
        let l = self.host_layout()?;
        if *frame.layout() != l || !frame.is_writable() {
            return Err(CudaError::invalid(
                "frame",
                format!("{:?}", frame.layout()),
                format!("a writable frame of layout {l:?}"),
            ));
        }
        let dev = self.device().clone();
        let stream = dev.stream()?;
        dev.stream_wait(stream, &self.ready)?;
        let api = dev.bind()?;
        let bytes = self.byte_len();
        // SAFETY: the frame's slot has room for `bytes` (same layout) and the
        // Download owns it until the copy completed; the device buffer is kept
        // by the fence below and by `self`.
        let r = unsafe {
            (api.memcpy_dtoh_async)(
                frame.as_ptr().cast(),
                self.lease.ptr(),
                bytes,
                stream as crate::driver::CUstream,
            )
        };
        check(api, "cuMemcpyDtoHAsync", r, || {
            format!("{bytes} bytes from cuda:{}", dev.index)
        })?;
        let done = Event::record_on(&dev, stream)?;
        self.lease.add_fence(Fence::Event(done.clone()));
        Ok(Download { frame, done })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use framebus_core::PoolConfig;

    fn frame(w: usize, h: usize, f: PixelFormat) -> Frame {
        FramePool::new(PoolConfig::default())
            .acquire_frame(w, h, f, None)
            .unwrap()
    }

    fn opts(format: &str, size: Option<(usize, usize)>) -> Upload {
        Upload {
            format: Some(DeviceFormat::parse(format).unwrap()),
            size,
            yuv: Some(YuvWeights {
                k: [[1; 3]; 3],
                y_offset: 16,
            }),
            ..Upload::default()
        }
    }

    #[test]
    fn plans_pick_the_kernel_and_the_output_size() {
        let f = frame(64, 36, PixelFormat::Bgra);
        let p = plan(&f, &opts("BGRX", None)).unwrap();
        assert_eq!((p.step, p.out_bytes), (Step::Copy, None));
        let p = plan(&f, &opts("RGB", None)).unwrap();
        assert_eq!(p.step, Step::Convert(Kernel::Rgb));
        let p = plan(&f, &opts("RGB", Some((64, 36)))).unwrap();
        assert_eq!(
            p.step,
            Step::Convert(Kernel::Rgb),
            "the same size is no resize"
        );
        let p = plan(&f, &opts("GRAY8", Some((10, 5)))).unwrap();
        assert_eq!(
            (p.step, p.out_bytes),
            (Step::Resample(ResampleOut::Gray), Some(50))
        );
        assert_eq!((p.width, p.height, p.out_pitch), (10, 5, 10));
        let p = plan(&f, &opts("RGB_F32_CHW", Some((7, 3)))).unwrap();
        assert_eq!(p.out_bytes, Some(12 * 7 * 3));
        let p = plan(&f, &opts("NV12", Some((8, 4)))).unwrap();
        assert!(matches!(p.step, Step::Nv12(_)));
        assert_eq!((p.out_bytes, p.out_pitch), (Some(8 * 4 * 3 / 2), 8));
        let p = plan(&f, &opts("NV12", None)).unwrap();
        assert_eq!(p.out_bytes, Some(64 * 36 * 3 / 2));
        let rgb = frame(9, 9, PixelFormat::Rgb);
        let p = plan(&rgb, &opts("RGB", Some((4, 4)))).unwrap();
        assert_eq!(
            (p.step, p.out_pitch),
            (Step::Resample(ResampleOut::Same), 12)
        );
    }

    #[test]
    fn bad_plans_are_errors_naming_the_value() {
        let f = frame(64, 36, PixelFormat::Bgra);
        let e = |o: Upload| plan(&f, &o).unwrap_err().to_string();
        assert!(e(opts("NV12", Some((7, 4)))).contains("even width"));
        assert!(e(opts("BGRX", Some((8, 8)))).contains("GPU resizing keeps"));
        let no_yuv = Upload {
            yuv: None,
            ..opts("NV12", None)
        };
        assert!(e(no_yuv).contains("YUV weights"));
        let nv = frame(8, 8, PixelFormat::Nv12);
        assert!(plan(&nv, &opts("RGB", None))
            .unwrap_err()
            .to_string()
            .contains("uploads as it is"));
        assert_eq!(plan(&nv, &Upload::default()).unwrap().step, Step::Copy);
        let rgb = frame(8, 8, PixelFormat::Rgb);
        assert!(plan(&rgb, &opts("NV12", None))
            .unwrap_err()
            .to_string()
            .contains("reads BGRA or BGRX"));
    }
}
