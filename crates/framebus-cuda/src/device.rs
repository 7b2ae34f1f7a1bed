//! Devices, streams and events: thin owners of driver handles.
//!
//! * [`Device`]: one per device index and process, holding the device's
//!   primary context (retained once, never released: it lives as long as the
//!   process, like the runtime API's). Every operation first makes it current
//!   on the calling thread ([`Device::bind`]), so any thread may use any device.
//! * [`Stream`]: framebus's own non-blocking stream of a device, or none: a
//!   caller's stream is only a handle ([`StreamHandle`]), never destroyed here.
//! * [`Event`]: destroyed when dropped (the driver defers the destruction of
//!   an event still pending, so dropping one early is safe).
//! * [`hold_until`]: keeps anything (a host slot's lease) alive until an event
//!   has completed, on one background thread per process.

use crate::driver::{self, check, Api, CUcontext, CUdevice, CUevent, CUstream};
use crate::error::{CudaError, Result, Unavailable};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A stream as the driver knows it: a `CUstream` value, which may be a
/// framebus stream, a caller's stream, `0` (the default stream),
/// [`driver::CU_STREAM_LEGACY`] (1) or [`driver::CU_STREAM_PER_THREAD`] (2).
pub type StreamHandle = usize;

/// One CUDA device with its primary context.
pub struct Device {
    pub index: usize,
    dev: CUdevice,
    ctx: CUcontext,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    pub name: String,
    pub total_memory: usize,
    stream: OnceLock<Stream>,
    pub(crate) kernels: OnceLock<crate::kernels::Module>,
}

// SAFETY: a CUcontext is a handle the driver lets every thread make current;
// everything else in Device is plain data or Sync itself.
unsafe impl Send for Device {}
// SAFETY: as above; the driver serialises its own use of the context.
unsafe impl Sync for Device {}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cuda:{} ({})", self.index, self.name)
    }
}

/// How many devices the driver sees (an error says why there are none).
pub fn device_count() -> Result<usize> {
    Ok(driver::driver()?.device_count)
}

/// Device `index` (opened once per process).
pub fn device(index: usize) -> Result<Arc<Device>> {
    static DEVICES: Mutex<Vec<Option<Arc<Device>>>> = Mutex::new(Vec::new());
    let drv = driver::driver()?;
    if index >= drv.device_count {
        return Err(Unavailable::NoSuchDevice {
            index: index as i64,
            count: drv.device_count,
        }
        .into());
    }
    let mut devs = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
    if devs.len() <= index {
        devs.resize(index + 1, None);
    }
    if let Some(d) = &devs[index] {
        return Ok(d.clone());
    }
    let d = Arc::new(Device::open(&drv.api, index)?);
    devs[index] = Some(d.clone());
    Ok(d)
}

impl Device {
    fn open(api: &Api, index: usize) -> Result<Device> {
        let mut dev: CUdevice = 0;
        // SAFETY: out-pointer is a live local; index < device count.
        let r = unsafe { (api.device_get)(&mut dev, index as i32) };
        check(api, "cuDeviceGet", r, || format!("device {index}"))?;
        let mut ctx: CUcontext = std::ptr::null_mut();
        // SAFETY: out-pointer is a live local; `dev` came from cuDeviceGet.
        let r = unsafe { (api.primary_ctx_retain)(&mut ctx, dev) };
        check(api, "cuDevicePrimaryCtxRetain", r, || {
            format!("device {index}")
        })?;
        let attr = |a| {
            let mut v = 0;
            // SAFETY: out-pointer is a live local; `dev` is valid.
            let r = unsafe { (api.device_get_attribute)(&mut v, a, dev) };
            check(api, "cuDeviceGetAttribute", r, String::new).map(|_| v)
        };
        let cc = (
            attr(driver::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attr(driver::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        );
        let mut name = [0 as std::ffi::c_char; 256];
        // SAFETY: the buffer holds 256 bytes and we pass that length.
        let r = unsafe { (api.device_get_name)(name.as_mut_ptr(), 256, dev) };
        check(api, "cuDeviceGetName", r, String::new)?;
        // SAFETY: the driver NUL-terminates within the length given; the last
        // byte is forced to NUL in case it did not.
        let name = unsafe {
            name[255] = 0;
            std::ffi::CStr::from_ptr(name.as_ptr())
        }
        .to_string_lossy()
        .into_owned();
        let mut total = 0usize;
        // SAFETY: out-pointer is a live local.
        let r = unsafe { (api.device_total_mem)(&mut total, dev) };
        check(api, "cuDeviceTotalMem", r, String::new)?;
        Ok(Device {
            index,
            dev,
            ctx,
            compute_capability: cc,
            name,
            total_memory: total,
            stream: OnceLock::new(),
            kernels: OnceLock::new(),
        })
    }

    /// Make this device's context current on the calling thread; the API.
    pub fn bind(&self) -> Result<&'static Api> {
        let api = driver::api()?;
        // SAFETY: `ctx` is the retained primary context of this device.
        let r = unsafe { (api.ctx_set_current)(self.ctx) };
        check(api, "cuCtxSetCurrent", r, || format!("cuda:{}", self.index))?;
        Ok(api)
    }

    /// The raw device number.
    pub fn raw(&self) -> CUdevice {
        self.dev
    }

    /// framebus's own stream on this device (non-blocking, created once).
    pub fn stream(&self) -> Result<StreamHandle> {
        if let Some(s) = self.stream.get() {
            return Ok(s.handle());
        }
        let s = Stream::new(self)?;
        // Two threads may race here: the loser's stream is destroyed.
        Ok(self.stream.get_or_init(|| s).handle())
    }

    /// (free, total) bytes of device memory (`cuMemGetInfo`).
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        let api = self.bind()?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: out-pointers are live locals; the context is current.
        let r = unsafe { (api.mem_get_info)(&mut free, &mut total) };
        check(api, "cuMemGetInfo", r, String::new)?;
        Ok((free, total))
    }

    /// Wait until every piece of work queued in this device's context is done.
    pub fn synchronize(&self) -> Result<()> {
        let api = self.bind()?;
        // SAFETY: the context is current.
        let r = unsafe { (api.ctx_synchronize)() };
        check(api, "cuCtxSynchronize", r, String::new)
    }

    /// Make `stream` wait (on the device) for `event`.
    pub fn stream_wait(&self, stream: StreamHandle, event: &Event) -> Result<()> {
        let api = self.bind()?;
        // SAFETY: both handles are valid in this context (a caller's stream is
        // the caller's promise, as in every CUDA API that takes one).
        let r = unsafe { (api.stream_wait_event)(stream as CUstream, event.raw, 0) };
        check(api, "cuStreamWaitEvent", r, || {
            format!("stream {stream:#x}")
        })
    }
}

/// A stream framebus created (destroyed when dropped).
pub struct Stream {
    raw: CUstream,
    device: usize,
}

// SAFETY: a stream handle may be used from any thread.
unsafe impl Send for Stream {}
// SAFETY: as above; the driver serialises work queued on a stream.
unsafe impl Sync for Stream {}

impl Stream {
    /// A new non-blocking stream on `device`.
    pub fn new(device: &Device) -> Result<Stream> {
        let api = device.bind()?;
        let mut raw: CUstream = std::ptr::null_mut();
        // SAFETY: out-pointer is a live local; the context is current.
        let r = unsafe { (api.stream_create)(&mut raw, driver::CU_STREAM_NON_BLOCKING) };
        check(api, "cuStreamCreate", r, String::new)?;
        Ok(Stream {
            raw,
            device: device.index,
        })
    }

    pub fn handle(&self) -> StreamHandle {
        self.raw as StreamHandle
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Ok(d) = device(self.device) {
            if let Ok(api) = d.bind() {
                // SAFETY: we created the stream and destroy it once; pending
                // work completes first (the driver defers the destruction).
                unsafe { (api.stream_destroy)(self.raw) };
            }
        }
    }
}

/// A CUDA event (timing disabled).
pub struct Event {
    raw: CUevent,
    device: Arc<Device>,
}

// SAFETY: an event handle may be recorded, queried and destroyed from any thread.
unsafe impl Send for Event {}
// SAFETY: as above.
unsafe impl Sync for Event {}

impl Event {
    /// A new event on `device`.
    pub fn new(device: &Arc<Device>) -> Result<Event> {
        let api = device.bind()?;
        let mut raw: CUevent = std::ptr::null_mut();
        // SAFETY: out-pointer is a live local; the context is current.
        let r = unsafe { (api.event_create)(&mut raw, driver::CU_EVENT_DISABLE_TIMING) };
        check(api, "cuEventCreate", r, String::new)?;
        Ok(Event {
            raw,
            device: device.clone(),
        })
    }

    /// A new event recorded on `stream` now: it completes when the work
    /// queued on `stream` so far has.
    pub fn record_on(device: &Arc<Device>, stream: StreamHandle) -> Result<Arc<Event>> {
        let e = Event::new(device)?;
        let api = device.bind()?;
        // SAFETY: both handles are valid in the current context.
        let r = unsafe { (api.event_record)(e.raw, stream as CUstream) };
        check(api, "cuEventRecord", r, || format!("stream {stream:#x}"))?;
        Ok(Arc::new(e))
    }

    /// True once the work the event stands for has completed.
    pub fn query(&self) -> Result<bool> {
        let api = self.device.bind()?;
        // SAFETY: the event is valid until we drop it.
        let r = unsafe { (api.event_query)(self.raw) };
        if r == driver::CUDA_ERROR_NOT_READY {
            return Ok(false);
        }
        check(api, "cuEventQuery", r, String::new).map(|_| true)
    }

    /// Wait up to `limit` (polling): true when completed.
    pub fn wait_for(&self, limit: Duration) -> Result<bool> {
        let end = Instant::now() + limit;
        let mut nap = Duration::from_micros(20);
        loop {
            if self.query()? {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= end {
                return Ok(false);
            }
            std::thread::sleep(nap.min(end - now));
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }

    /// Block until completed (`cuEventSynchronize`).
    pub fn synchronize(&self) -> Result<()> {
        let api = self.device.bind()?;
        // SAFETY: the event is valid until we drop it.
        let r = unsafe { (api.event_synchronize)(self.raw) };
        check(api, "cuEventSynchronize", r, String::new)
    }

    pub fn raw(&self) -> CUevent {
        self.raw
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if let Ok(api) = self.device.bind() {
            // SAFETY: our event, destroyed once; a pending one is destroyed by
            // the driver when it completes.
            unsafe { (api.event_destroy)(self.raw) };
        }
    }
}

type Held = (Arc<Event>, Box<dyn Send>);

/// Keep `held` alive until `event` has completed, then drop it on framebus's
/// reaper thread (which is where a host slot goes back to its pool after the
/// copy that reads it). If the event cannot be waited for (the driver failed),
/// `held` is kept until the device's context has been synchronised.
pub fn hold_until(event: Arc<Event>, held: Box<dyn Send>) {
    static REAPER: Mutex<Option<Sender<Held>>> = Mutex::new(None);
    let mut tx = REAPER.lock().unwrap_or_else(|e| e.into_inner());
    let sender = tx.get_or_insert_with(|| {
        let (s, r) = channel::<Held>();
        let spawned = std::thread::Builder::new()
            .name("framebus-cuda-reaper".into())
            .spawn(move || {
                for (ev, held) in r {
                    if ev.synchronize().is_err() {
                        let _ = ev.device().synchronize();
                    }
                    drop(held);
                    PENDING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                }
            });
        // Without a thread the receiver is gone and `send` below fails: the
        // caller then waits right here instead.
        drop(spawned);
        s
    });
    PENDING.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    if let Err(e) = sender.send((event, held)) {
        // The reaper is gone (could not be spawned): wait here, then drop.
        let (ev, held) = e.0;
        if ev.synchronize().is_err() {
            let _ = ev.device().synchronize();
        }
        drop(held);
        PENDING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        *tx = None;
    }
}

static PENDING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Things [`hold_until`] still holds (host leases waiting for their copy).
pub fn held_count() -> usize {
    PENDING.load(std::sync::atomic::Ordering::Acquire)
}

/// `CudaError::Invalid` for a device string that is not `cuda` / `cuda:N` / `N`.
pub fn parse_device(s: &str) -> Result<usize> {
    let t = s.trim();
    let n = t
        .strip_prefix("cuda:")
        .or_else(|| (t == "cuda").then_some("0"))
        .unwrap_or(t);
    n.parse::<usize>().map_err(|_| {
        CudaError::invalid(
            "device",
            format!("{s:?}"),
            "expected \"cuda\", \"cuda:N\" or a device number",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings() {
        assert_eq!(parse_device("cuda").unwrap(), 0);
        assert_eq!(parse_device("cuda:3").unwrap(), 3);
        assert_eq!(parse_device("1").unwrap(), 1);
        let e = parse_device("cpu").unwrap_err().to_string();
        assert!(e.contains("device=\"cpu\""), "{e}");
        assert!(parse_device("cuda:-1").is_err());
    }
}
