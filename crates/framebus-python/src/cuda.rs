//! `framebus.cuda`: the Python face of framebus-cuda — `DevicePool`,
//! `CudaFrame`, `Frame.to_device`, `FramePool(pinned=...)`'s hook and the
//! module functions (`_cuda_*`, re-exported by `python/framebus/cuda.py`).
//!
//! Conversion, GIL release and error mapping only: the driver, the ordering
//! rules and the pools live in the crate. Waits (a device pool at its limit,
//! `synchronize`, `to_host`) go through `wait::wait`, so Ctrl-C works.
//!
//! Exports of a `CudaFrame` and what fences its buffer's reuse:
//! * `__dlpack__(stream=s)`: `s` waits for the frame (`cuStreamWaitEvent`);
//!   when the consumer deletes the tensor an event recorded on `s` fences the
//!   buffer. `stream=None` means the legacy default stream (1), as the DLPack
//!   standard says for CUDA; `-1` means no synchronisation, and the buffer is
//!   then fenced by a context synchronisation before reuse.
//! * `__cuda_array_interface__` (v3, `stream` = the frame's stream): the
//!   consumer keeps the `CudaFrame` object alive and has no release hook, so a
//!   frame whose CAI was read fences its buffer with a context
//!   synchronisation when the object goes.

use crate::args::{self, Int};
use crate::errors::{Error, Result};
use crate::frame::PyFrame;
use crate::pool::PyFramePool;
use crate::wait;
use framebus_core::{Exhausted, SlotHook};
use framebus_cuda::{
    self as fc, Consumer, CudaFrame, DeviceFormat, DevicePool, DevicePoolConfig, Fence, Upload,
};
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::ops::ControlFlow::{Break, Continue};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A device argument: `"cuda"`, `"cuda:N"`, `N`, or a `torch.device`-like
/// object with `.type == "cuda"` and `.index`.
fn device_index(d: &Bound<'_, PyAny>) -> Result<usize> {
    if let Ok(s) = d.extract::<String>() {
        return Ok(fc::device::parse_device(&s)?);
    }
    if let Ok(i) = d.extract::<Int>() {
        return args::count("device", i, 0, 1 << 16);
    }
    if let (Ok(t), Ok(i)) = (d.getattr("type"), d.getattr("index")) {
        if t.extract::<String>().ok().as_deref() == Some("cuda") {
            return match i.extract::<Option<Int>>()? {
                None => Ok(0),
                Some(i) => args::count("device", i, 0, 1 << 16),
            };
        }
    }
    Err(Error::value(format!(
        "invalid device={} (expected \"cuda\", \"cuda:N\" or a device number)",
        d.repr().map_or_else(|_| "?".into(), |r| r.to_string())
    )))
}

/// A stream argument: an int handle, or an object with `.cuda_stream`
/// (torch) or `.ptr` (CuPy).
fn stream_handle(s: &Bound<'_, PyAny>) -> Result<usize> {
    let v = if let Ok(i) = s.extract::<Int>() {
        i
    } else if let Ok(a) = s.getattr("cuda_stream").or_else(|_| s.getattr("ptr")) {
        a.extract::<Int>()?
    } else {
        return Err(Error::type_(format!(
            "stream={} is not a stream handle (an int, a torch.cuda.Stream or a cupy Stream)",
            s.repr().map_or_else(|_| "?".into(), |r| r.to_string())
        )));
    };
    usize::try_from(v.0)
        .map_err(|_| Error::value(format!("invalid stream={v} (a CUstream handle >= 0)")))
}

/// The pin hook of `FramePool(pinned=device)`.
pub fn pin_hook(device: &Bound<'_, PyAny>) -> Result<Arc<dyn SlotHook>> {
    let dev = fc::device(device_index(device)?)?;
    Ok(fc::PinHook::new(dev))
}

/// Each device's default pool: bounded to half the device's memory.
fn default_device_pool(index: usize) -> Result<DevicePool> {
    static POOLS: Mutex<Vec<(usize, DevicePool)>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(i, _)| *i == index) {
        return Ok(p.clone());
    }
    let dev = fc::device(index)?;
    let p = DevicePool::new(
        dev.clone(),
        DevicePoolConfig {
            max_bytes: Some((dev.total_memory / 2).max(fc::pool::GRANULE)),
            on_exhausted: Exhausted::Error,
        },
    );
    pools.push((index, p.clone()));
    Ok(p)
}

/// Lease `len` bytes of `pool` under its policy, waiting in Ctrl-C-aware
/// slices (for a buffer the GPU still uses, under either policy).
fn acquire(
    py: Python<'_>,
    pool: &DevicePool,
    len: usize,
    stream: usize,
) -> Result<fc::DeviceLease> {
    let (fail_when_full, timeout) = match pool.config().on_exhausted {
        Exhausted::Error => (true, None),
        Exhausted::Block(t) => (false, t),
    };
    let mut first = true;
    wait::wait(
        py,
        timeout,
        |slice| {
            let got = pool.acquire_slice(len, Some(stream), slice, first)?;
            first = false;
            match got {
                fc::Attempt::Got(l) => Ok(Break(l)),
                fc::Attempt::Full if fail_when_full => Err(pool.exhausted(len)),
                _ => Ok(Continue(())),
            }
        },
        |_, ()| Error::Cuda(pool.exhausted(len)),
    )
}

/// A pool of device buffers on one GPU (leases, limits, stats, trim, like `FramePool`).
#[pyclass(name = "DevicePool", module = "framebus.cuda", frozen)]
pub struct PyDevicePool {
    pool: DevicePool,
}

#[pymethods]
impl PyDevicePool {
    #[new]
    #[pyo3(signature = (device=None, max_bytes=None, on_exhausted="raise", timeout=None))]
    fn new(
        py: Python<'_>,
        device: Option<&Bound<'_, PyAny>>,
        max_bytes: Option<Int>,
        on_exhausted: &str,
        timeout: Option<f64>,
    ) -> Result<Self> {
        let index = device.map(device_index).transpose()?.unwrap_or(0);
        let max_bytes = args::opt_count("max_bytes", max_bytes, 1, isize::MAX as usize)?;
        let timeout = args::timeout("timeout", timeout)?;
        let on_exhausted = match args::choice("on_exhausted", on_exhausted, &["raise", "block"])? {
            "raise" => Exhausted::Error,
            _ => Exhausted::Block(timeout),
        };
        let dev = py.detach(|| fc::device(index))?;
        Ok(PyDevicePool {
            pool: DevicePool::new(
                dev,
                DevicePoolConfig {
                    max_bytes,
                    on_exhausted,
                },
            ),
        })
    }

    /// `"cuda:N"`.
    #[getter]
    fn device(&self) -> String {
        format!("cuda:{}", self.pool.device().index)
    }

    /// Exact accounting at this instant.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let pool = &self.pool;
        let s = py.detach(|| pool.stats());
        let d = PyDict::new(py);
        d.set_item("device", s.device)?;
        d.set_item("buffers", s.buffers)?;
        d.set_item("buffers_in_use", s.buffers_in_use)?;
        d.set_item("buffers_free", s.buffers_free)?;
        d.set_item("buffers_pending", s.buffers_pending)?;
        d.set_item("bytes_allocated", s.bytes_allocated)?;
        d.set_item("bytes_in_use", s.bytes_in_use)?;
        d.set_item("bytes_free", s.bytes_free)?;
        d.set_item("high_water_bytes", s.high_water_bytes)?;
        d.set_item("max_bytes", s.max_bytes)?;
        d.set_item("acquires", s.acquires)?;
        d.set_item("reuses", s.reuses)?;
        d.set_item("allocs", s.allocs)?;
        d.set_item("frees", s.frees)?;
        d.set_item("fence_waits", s.fence_waits)?;
        d.set_item("stream_ordered_reuses", s.stream_ordered_reuses)?;
        d.set_item("context_syncs", s.context_syncs)?;
        d.set_item("waits", s.waits)?;
        d.set_item("exhausted", s.exhausted)?;
        d.set_item("closed", s.closed)?;
        Ok(d)
    }

    /// Free every free buffer whose GPU work has completed; the bytes freed.
    fn trim(&self, py: Python<'_>) -> usize {
        let pool = &self.pool;
        py.detach(|| pool.trim())
    }

    /// Refuse new uploads; free what is free (the rest when returned).
    fn close(&self, py: Python<'_>) {
        let pool = &self.pool;
        py.detach(|| pool.close())
    }

    fn __repr__(&self) -> String {
        let s = self.pool.stats();
        format!(
            "DevicePool(device='cuda:{}', buffers={}, in_use={}, bytes_allocated={}, max_bytes={:?})",
            s.device, s.buffers, s.buffers_in_use, s.bytes_allocated, s.max_bytes
        )
    }
}

crate::context::closes_on_exit!(PyDevicePool, close);

/// A frame in GPU memory (DLPack `kDLCUDA`, `__cuda_array_interface__` v3).
#[pyclass(name = "CudaFrame", module = "framebus.cuda", frozen)]
pub struct PyCudaFrame {
    frame: Mutex<Option<CudaFrame>>,
    cai_exported: AtomicBool,
    // Geometry, kept for the getters after release.
    #[pyo3(get)]
    width: usize,
    #[pyo3(get)]
    height: usize,
    /// Bytes from one row to the next (RGB_F32_CHW: 4 * width).
    #[pyo3(get)]
    pitch: usize,
    #[pyo3(get)]
    format: &'static str,
    #[pyo3(get)]
    timestamp_ns: u64,
    #[pyo3(get)]
    seq: u64,
    device: usize,
    /// The stream (a CUstream handle) the contents are ready on.
    #[pyo3(get)]
    stream: usize,
    /// The device pointer of the first pixel.
    #[pyo3(get, name = "data_ptr")]
    ptr: u64,
    #[pyo3(get)]
    nbytes: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
    float: bool,
}

impl PyCudaFrame {
    fn new(f: CudaFrame) -> PyCudaFrame {
        PyCudaFrame {
            width: f.width,
            height: f.height,
            pitch: f.pitch,
            format: f.format.name(),
            timestamp_ns: f.timestamp_ns,
            seq: f.seq,
            device: f.device().index,
            stream: f.stream,
            ptr: f.ptr(),
            nbytes: f.byte_len(),
            shape: f.shape(),
            strides: f.strides(),
            float: f.format.is_float(),
            frame: Mutex::new(Some(f)),
            cai_exported: AtomicBool::new(false),
        }
    }

    fn get(&self) -> Result<CudaFrame> {
        self.frame
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::value("the CudaFrame was released"))
    }

    fn item(&self) -> usize {
        if self.float {
            4
        } else {
            1
        }
    }
}

impl Drop for PyCudaFrame {
    fn drop(&mut self) {
        if let Some(f) = self
            .frame
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            if *self.cai_exported.get_mut() {
                // A CAI consumer may still have work queued on the buffer.
                f.lease().add_fence(Fence::Context);
            }
        }
    }
}

#[pymethods]
impl PyCudaFrame {
    /// `"cuda:N"`.
    #[getter]
    fn device(&self) -> String {
        format!("cuda:{}", self.device)
    }
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.shape)
    }
    #[getter]
    fn released(&self) -> bool {
        self.frame
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// True once the upload (and conversion) completed; never waits.
    fn is_ready(&self, py: Python<'_>) -> Result<bool> {
        let f = self.get()?;
        Ok(py.detach(|| f.is_ready())?)
    }

    /// Wait (GIL released, Ctrl-C honoured) until the contents are ready.
    #[pyo3(signature = (timeout=None))]
    fn synchronize(&self, py: Python<'_>, timeout: Option<f64>) -> Result<()> {
        let timeout = args::timeout("timeout", timeout)?;
        let f = self.get()?;
        wait::wait(
            py,
            timeout,
            |slice| {
                Ok::<_, fc::CudaError>(if f.wait_ready(slice)? {
                    Break(())
                } else {
                    Continue(())
                })
            },
            |waited, ()| wait::timed_out("the CudaFrame's upload", waited),
        )
    }

    /// Copy into a (pinned, if the pool is) host slot; 8-bit formats only.
    #[pyo3(signature = (pool=None, timeout=None))]
    fn to_host(
        &self,
        py: Python<'_>,
        pool: Option<&PyFramePool>,
        timeout: Option<f64>,
    ) -> Result<PyFrame> {
        let timeout = args::timeout("timeout", timeout)?;
        let f = self.get()?;
        let l = f.host_layout()?;
        let pool = crate::pool::pool_or_default(pool)?;
        let lease = crate::pool::acquire(py, &pool, l.byte_len(), pool.config().on_exhausted)?;
        let frame = framebus_core::Frame::new(lease, l)?.with_meta(self.timestamp_ns, self.seq);
        let dl = py.detach(|| f.download_into(frame))?;
        let dl = Mutex::new(Some(dl));
        wait::wait(
            py,
            timeout,
            |slice| {
                let mut g = dl.lock().unwrap_or_else(|e| e.into_inner());
                let done = g.as_ref().map_or(Ok(true), |d| d.wait(slice))?;
                Ok::<_, fc::CudaError>(if done {
                    Break(g.take().map(|d| d.into_frame()))
                } else {
                    Continue(())
                })
            },
            |waited, ()| wait::timed_out("the copy to the host", waited),
        )?
        .map(PyFrame::from_frame)
        .ok_or_else(|| Error::value("the download was already taken"))
    }

    /// Drop this object's claim on the device buffer now (exports keep theirs).
    fn release(&self) {
        let f = self.frame.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = f {
            if self.cai_exported.load(Ordering::Acquire) {
                f.lease().add_fence(Fence::Context);
            }
        }
    }

    /// DLPack export (`kDLCUDA`). `stream`: the consumer's stream (waits for
    /// the frame on the device); None = the legacy default stream (1); -1 = no
    /// synchronisation; 2 = the per-thread default stream.
    #[pyo3(signature = (*, stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__<'py>(
        &self,
        py: Python<'py>,
        stream: Option<Bound<'py, PyAny>>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let consumer = match stream.filter(|s| !s.is_none()) {
            None => Consumer::Stream(fc::driver::CU_STREAM_LEGACY),
            Some(s) => match s.extract::<Int>().map_err(|_| {
                Error::type_(format!(
                    "stream={s} must be an int (a CUstream handle, 1, 2 or -1)"
                ))
            })? {
                Int(-1) => Consumer::Unsynchronised,
                Int(0) => {
                    return Err(Error::value(
                        "invalid stream=0 (DLPack forbids 0 for CUDA: pass 1 for the legacy \
                         default stream, 2 for the per-thread one, or -1 for no synchronisation)",
                    )
                    .into())
                }
                i => Consumer::Stream(stream_handle(&i.0.into_pyobject(py)?.into_any())?),
            },
        };
        crate::dlpack::check_dl_device(dl_device, self.__dlpack_device__())?;
        if copy == Some(true) {
            return Err(PyBufferError::new_err(
                "copy=True is not supported for CudaFrame (to_host() copies to the CPU)",
            ));
        }
        let f = self.get()?;
        let guard = py.detach(|| f.export(consumer)).map_err(Error::from)?;
        crate::dlpack::export_device(
            py,
            crate::dlpack::DeviceTensor {
                data: f.ptr(),
                device_type: crate::dlpack::KDL_CUDA,
                device_id: self.device as i32,
                shape: self.shape.clone(),
                strides: self.strides.clone(),
                float: self.float,
                bits: (8 * self.item()) as u8,
            },
            Box::new(guard),
            max_version.is_some_and(|(major, _)| major >= 1),
        )
    }

    fn __dlpack_device__(&self) -> (i32, i32) {
        (crate::dlpack::KDL_CUDA, self.device as i32)
    }

    /// `__cuda_array_interface__` version 3; `stream` is the frame's stream
    /// (1 when that is the legacy default stream 0).
    #[getter]
    fn __cuda_array_interface__<'py>(&self, py: Python<'py>) -> Result<Bound<'py, PyDict>> {
        self.get()?;
        self.cai_exported.store(true, Ordering::Release);
        let d = PyDict::new(py);
        d.set_item("version", 3)?;
        d.set_item("shape", PyTuple::new(py, &self.shape)?)?;
        d.set_item("typestr", if self.float { "<f4" } else { "|u1" })?;
        d.set_item("data", (self.ptr, false))?;
        let item = self.item();
        let contiguous = {
            let mut expect = 1;
            let mut ok = true;
            for (s, st) in self.shape.iter().zip(&self.strides).rev() {
                ok &= *st == expect;
                expect *= s;
            }
            ok
        };
        if contiguous {
            d.set_item("strides", py.None())?;
        } else {
            let bytes: Vec<usize> = self.strides.iter().map(|s| s * item).collect();
            d.set_item("strides", PyTuple::new(py, bytes)?)?;
        }
        d.set_item("stream", if self.stream == 0 { 1 } else { self.stream })?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "<framebus.cuda.CudaFrame {}x{} {} pitch={} on cuda:{} seq={}{}>",
            self.width,
            self.height,
            self.format,
            self.pitch,
            self.device,
            self.seq,
            if self.released() { ", released" } else { "" }
        )
    }
}

/// `Frame.to_device`'s options, checked once: what `to_device` uses for one
/// frame and `Capture`/`Subscriber(device=...)` for every frame they deliver.
#[derive(Clone)]
pub struct DeviceUpload {
    index: usize,
    opts: Upload,
    pool: Option<DevicePool>,
}

/// The keywords `DeviceUpload::from_kwargs` takes beside `device`
/// (`to_device`'s `pool` is `device_pool` there, beside a host `pool=`).
const UPLOAD_KEYWORDS: [&str; 9] = [
    "format",
    "size",
    "method",
    "mean",
    "std",
    "matrix",
    "range",
    "stream",
    "device_pool",
];

/// `to_device`'s arguments as Python gave them (`DeviceUpload::parse` checks them).
struct UploadArgs<'a, 'py> {
    device: Option<&'a Bound<'py, PyAny>>,
    stream: Option<&'a Bound<'py, PyAny>>,
    format: Option<&'a str>,
    mean: Option<&'a Bound<'py, PyAny>>,
    std: Option<&'a Bound<'py, PyAny>>,
    pool: Option<&'a PyDevicePool>,
    size: Option<(Int, Int)>,
    method: Option<&'a str>,
    matrix: Option<&'a str>,
    range: Option<&'a str>,
}

impl DeviceUpload {
    /// Check `to_device`'s arguments (see its doc).
    fn parse(a: UploadArgs<'_, '_>) -> Result<DeviceUpload> {
        // `device=None` is "cuda:0".
        let index = a.device.map(device_index).transpose()?.unwrap_or(0);
        let format = a.format.map(DeviceFormat::parse).transpose()?;
        if (a.mean.is_some() || a.std.is_some()) && format != Some(DeviceFormat::RgbF32Chw) {
            return Err(Error::value(
                "mean= and std= apply to format=\"RGB_F32_CHW\" only",
            ));
        }
        let nv12 = format == Some(DeviceFormat::Packed(framebus_core::PixelFormat::Nv12));
        if (a.matrix.is_some() || a.range.is_some()) && !nv12 {
            return Err(Error::value(
                "matrix= and range= apply to format=\"NV12\" only",
            ));
        }
        let size = a
            .size
            .map(|(w, h)| {
                Ok::<_, Error>((args::dimension("width", w)?, args::dimension("height", h)?))
            })
            .transpose()?;
        if a.method.is_some() && size.is_none() {
            return Err(Error::value("method= applies with size= only"));
        }
        let method = match a.method.map(str::parse).transpose()? {
            None | Some(framebus_kernels::Method::Bilinear) => fc::ResizeMethod::Bilinear,
            Some(framebus_kernels::Method::Area) => fc::ResizeMethod::Area,
        };
        let matrix: framebus_kernels::YuvMatrix = a.matrix.unwrap_or("bt601").parse()?;
        let range: framebus_kernels::YuvRange = a.range.unwrap_or("limited").parse()?;
        let (k, y_offset) = framebus_kernels::yuv_weights(matrix, range);
        let pool = match a.pool {
            Some(p) if p.pool.device().index != index => {
                return Err(Error::value(format!(
                    "invalid pool= on cuda:{} for device=\"cuda:{index}\"",
                    p.pool.device().index
                )))
            }
            p => p.map(|p| p.pool.clone()),
        };
        Ok(DeviceUpload {
            index,
            opts: Upload {
                stream: a.stream.map(stream_handle).transpose()?,
                format,
                mean: args::per_channel("mean", a.mean, 0.0, false)?,
                std: args::per_channel("std", a.std, 1.0, true)?,
                size,
                method,
                yuv: Some(fc::YuvWeights { k, y_offset }),
            },
            pool,
        })
    }

    /// `Capture(..., device=, **upload)` and the subscribers' `device=`:
    /// `device` and `to_device`'s keywords (`device_pool` for its `pool`);
    /// None when `device` is None (then no upload keyword may be given).
    /// `what` names the caller in errors.
    pub fn from_kwargs(
        what: &str,
        device: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Result<Option<DeviceUpload>> {
        let get = |k: &str| -> Result<Option<Bound<'_, PyAny>>> {
            Ok(match kwargs {
                Some(d) => d.get_item(k)?.filter(|v| !v.is_none()),
                None => None,
            })
        };
        if let Some(d) = kwargs {
            for k in d.keys() {
                let k: String = k.extract()?;
                if !UPLOAD_KEYWORDS.contains(&k.as_str()) {
                    return Err(Error::type_(format!(
                        "{what}() got an unexpected keyword argument '{k}'"
                    )));
                }
            }
        }
        let Some(device) = device.filter(|d| !d.is_none()) else {
            if let Some(k) = UPLOAD_KEYWORDS
                .iter()
                .find(|k| get(k).ok().flatten().is_some())
            {
                return Err(Error::value(format!(
                    "{what}(): {k}= applies with device= only (frames uploaded to a GPU)"
                )));
            }
            return Ok(None);
        };
        let format = get("format")?.map(|v| v.extract::<String>()).transpose()?;
        let method = get("method")?.map(|v| v.extract::<String>()).transpose()?;
        let matrix = get("matrix")?.map(|v| v.extract::<String>()).transpose()?;
        let range = get("range")?.map(|v| v.extract::<String>()).transpose()?;
        let size = get("size")?
            .map(|v| v.extract::<(Int, Int)>())
            .transpose()?;
        let pool = get("device_pool")?;
        let pool = pool
            .as_ref()
            .map(|p| p.extract::<PyRef<'_, PyDevicePool>>())
            .transpose()
            .map_err(|_| Error::type_("device_pool= must be a framebus.cuda.DevicePool"))?;
        let (stream, mean, std) = (get("stream")?, get("mean")?, get("std")?);
        Self::parse(UploadArgs {
            device: Some(device),
            stream: stream.as_ref(),
            format: format.as_deref(),
            mean: mean.as_ref(),
            std: std.as_ref(),
            pool: pool.as_deref(),
            size,
            method: method.as_deref(),
            matrix: matrix.as_deref(),
            range: range.as_deref(),
        })
        .map(Some)
    }

    /// The pin hook for this upload's device (pinned host slots to upload from).
    pub fn pin_hook(&self) -> Result<Arc<dyn SlotHook>> {
        Ok(fc::PinHook::new(fc::device(self.index)?))
    }

    /// Queue `frame`'s copy (and conversion) on the GPU: a `CudaFrame` ready
    /// on the upload's stream; the host slot is held until the copy completed.
    pub fn upload(&self, py: Python<'_>, frame: &framebus_core::Frame) -> Result<PyCudaFrame> {
        let pool = match &self.pool {
            Some(p) => p.clone(),
            None => py.detach(|| default_device_pool(self.index))?,
        };
        let plan = fc::plan(frame, &self.opts)?;
        let stream = match self.opts.stream {
            Some(s) => s,
            None => py.detach(|| pool.device().stream())?,
        };
        let opts = Upload {
            stream: Some(stream),
            ..self.opts.clone()
        };
        let staging = acquire(py, &pool, plan.staging_bytes, stream)?;
        let out = plan
            .out_bytes
            .map(|n| acquire(py, &pool, n, stream))
            .transpose()?;
        let f = py.detach(|| fc::upload_leased(frame, &plan, staging, out, &opts))?;
        Ok(PyCudaFrame::new(f))
    }
}

/// A frame as a source made with `device=` (or without) hands it out: as it
/// is, or queued for upload to the GPU and returned as a `CudaFrame`.
pub fn deliver(py: Python<'_>, upload: Option<&DeviceUpload>, frame: PyFrame) -> Result<Py<PyAny>> {
    match upload {
        None => Ok(Py::new(py, frame)?.into_any()),
        Some(up) => Ok(Py::new(py, up.upload(py, &frame.frame()?)?)?.into_any()),
    }
}

#[pymethods]
impl PyFrame {
    /// Copy this frame to the GPU, asynchronously: a `CudaFrame` whose
    /// contents are ready on `stream` (framebus's stream of the device, or the
    /// caller's). `format` converts on the GPU (from BGRA/BGRX: "RGB", "BGR",
    /// "GRAY8", "NV12" with `matrix`/`range`, "RGB_F32_CHW" with
    /// `(v / 255 - mean) / std`); `size=(w, h)` resizes (`method` "bilinear"
    /// or "area") in the same kernel. Results equal `Frame.resize`/`convert`/
    /// `to_tensor`. The slot is held until the copy completed.
    #[pyo3(signature = (device=None, stream=None, format=None, mean=None, std=None, pool=None, *, size=None, method=None, matrix=None, range=None))]
    #[allow(clippy::too_many_arguments)]
    fn to_device(
        &self,
        py: Python<'_>,
        device: Option<&Bound<'_, PyAny>>,
        stream: Option<&Bound<'_, PyAny>>,
        format: Option<&str>,
        mean: Option<&Bound<'_, PyAny>>,
        std: Option<&Bound<'_, PyAny>>,
        pool: Option<&PyDevicePool>,
        size: Option<(Int, Int)>,
        method: Option<&str>,
        matrix: Option<&str>,
        range: Option<&str>,
    ) -> Result<PyCudaFrame> {
        let up = DeviceUpload::parse(UploadArgs {
            device,
            stream,
            format,
            mean,
            std,
            pool,
            size,
            method,
            matrix,
            range,
        })?;
        up.upload(py, &self.frame()?)
    }
}

#[pyfunction]
fn _cuda_is_available(py: Python<'_>) -> bool {
    py.detach(fc::is_available)
}

#[pyfunction]
fn _cuda_device_count(py: Python<'_>) -> Result<usize> {
    Ok(py.detach(fc::device_count)?)
}

/// Why CUDA is unavailable (None when it is available).
#[pyfunction]
fn _cuda_unavailable_reason(py: Python<'_>) -> Option<String> {
    py.detach(fc::unavailable_reason).map(|u| u.to_string())
}

/// Name, compute capability, total memory and driver version of a device.
#[pyfunction]
fn _cuda_device_info<'py>(
    py: Python<'py>,
    device: &Bound<'py, PyAny>,
) -> Result<Bound<'py, PyDict>> {
    let index = device_index(device)?;
    let dev = py.detach(|| fc::device(index))?;
    let (free, total) = py.detach(|| dev.mem_info())?;
    let drv = fc::driver::driver().map_err(fc::CudaError::from)?;
    let d = PyDict::new(py);
    d.set_item("name", &dev.name)?;
    d.set_item("compute_capability", dev.compute_capability)?;
    d.set_item("total_memory", total)?;
    d.set_item("free_memory", free)?;
    d.set_item("driver_version", fc::driver::version_string(drv.version))?;
    d.set_item("driver_library", &drv.api.path)?;
    Ok(d)
}

/// framebus's kernels compiled by NVRTC for `arch` (e.g. "sm_86"): PTX text.
#[pyfunction]
fn _cuda_compile_kernels(py: Python<'_>, arch: &str) -> Result<String> {
    if !arch
        .strip_prefix("sm_")
        .or_else(|| arch.strip_prefix("compute_"))
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(Error::value(format!(
            "invalid arch={arch:?} (e.g. \"sm_75\" or \"compute_90\")"
        )));
    }
    let ptx = py.detach(|| fc::kernels::compile(arch))?;
    Ok(String::from_utf8_lossy(&ptx)
        .trim_end_matches('\0')
        .to_owned())
}

/// NVRTC's library path and version.
#[pyfunction]
fn _cuda_nvrtc_version(py: Python<'_>) -> Result<(String, (i32, i32))> {
    Ok(py.detach(fc::nvrtc::version)?)
}

/// Host slots still held for uploads whose copy has not completed.
#[pyfunction]
fn _cuda_held_host_frames() -> usize {
    fc::device::held_count()
}

/// The kernels' names and CUDA C source.
#[pyfunction]
fn _cuda_kernel_source() -> (Vec<&'static str>, &'static str) {
    (fc::kernels::NAMES.to_vec(), fc::kernels::SOURCE)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDevicePool>()?;
    m.add_class::<PyCudaFrame>()?;
    m.add_function(wrap_pyfunction!(_cuda_is_available, m)?)?;
    m.add_function(wrap_pyfunction!(_cuda_device_count, m)?)?;
    m.add_function(wrap_pyfunction!(_cuda_unavailable_reason, m)?)?;
    m.add_function(wrap_pyfunction!(_cuda_device_info, m)?)?;
    m.add_function(wrap_pyfunction!(_cuda_compile_kernels, m)?)?;
    m.add_function(wrap_pyfunction!(_cuda_nvrtc_version, m)?)?;
    m.add_function(wrap_pyfunction!(_cuda_held_host_frames, m)?)?;
    m.add_function(wrap_pyfunction!(_cuda_kernel_source, m)?)?;
    Ok(())
}
