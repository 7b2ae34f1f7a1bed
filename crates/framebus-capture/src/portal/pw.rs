//! PipeWire, loaded at run time: a minimal hand-written FFI to
//! `libpipewire-0.3.so.0` (through `libloading`, so framebus links nothing
//! and its wheels import on machines without PipeWire), and a video input
//! stream on the portal's remote that keeps the newest buffer.
//!
//! ```text
//!  portal fd ─▶ pw_context_connect_fd ─▶ pw_stream (INPUT, node id, EnumFormat pod)
//!     thread loop (PipeWire's thread, its lock held in every callback)
//!        add_buffer:    MemFd → our own mmap of a dup of the fd (Arc<Mapping>)
//!        param_changed: Format → size, pixel format; answer with a Buffers pod
//!        process:       dequeue everything, keep the newest, queue the others back
//!  consumer (any thread)
//!        latest():      the newest buffer + its mapping, marked held
//!        Hold::drop:    lock the thread loop, queue the buffer back (or keep it as
//!                       "newest" if nothing newer came), unlock
//! ```
//!
//! Lock order: the thread-loop lock first, then our `State` mutex; callbacks
//! already hold the former. `pw_stream_queue_buffer` is only ever called with
//! the thread-loop lock held. Buffers are mapped by us (not with
//! `PW_STREAM_FLAG_MAP_BUFFERS`), so a frame that holds a mapping stays valid
//! even if PipeWire removes the buffer (renegotiation): the mapping goes when
//! the last holder does. The stream itself lives in an `Arc` every hold owns,
//! so it is never destroyed while a buffer is out.

use super::pod::{self, key, Value};
use crate::{CaptureError, Result};
use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const LIBRARY: &str = "libpipewire-0.3.so.0";

// spa/buffer/buffer.h and pipewire/stream.h, as in PipeWire 0.3.65 (these
// layouts are part of PipeWire's stable ABI).
#[repr(C)]
struct SpaChunk {
    offset: u32,
    size: u32,
    stride: i32,
    flags: i32,
}
#[repr(C)]
struct SpaData {
    type_: u32,
    flags: u32,
    fd: i64,
    mapoffset: u32,
    maxsize: u32,
    data: *mut c_void,
    chunk: *mut SpaChunk,
}
#[repr(C)]
struct SpaMeta {
    type_: u32,
    size: u32,
    data: *mut c_void,
}
/// `spa_meta_region`: a `spa_region` (position, size).
#[repr(C)]
struct SpaMetaRegion {
    x: i32,
    y: i32,
    width: u32,
    height: u32,
}
#[repr(C)]
struct SpaBuffer {
    n_metas: u32,
    n_datas: u32,
    metas: *mut c_void,
    datas: *mut SpaData,
}
#[repr(C)]
pub(crate) struct PwBuffer {
    buffer: *mut SpaBuffer,
    user_data: *mut c_void,
    size: u64,
    requested: u64,
}
#[repr(C)]
struct PwStreamEvents {
    version: u32,
    destroy: Option<unsafe extern "C" fn(*mut c_void)>,
    state_changed: Option<unsafe extern "C" fn(*mut c_void, c_int, c_int, *const c_char)>,
    control_info: Option<unsafe extern "C" fn(*mut c_void, u32, *const c_void)>,
    io_changed: Option<unsafe extern "C" fn(*mut c_void, u32, *mut c_void, u32)>,
    param_changed: Option<unsafe extern "C" fn(*mut c_void, u32, *const c_void)>,
    add_buffer: Option<unsafe extern "C" fn(*mut c_void, *mut PwBuffer)>,
    remove_buffer: Option<unsafe extern "C" fn(*mut c_void, *mut PwBuffer)>,
    process: Option<unsafe extern "C" fn(*mut c_void)>,
    drained: Option<unsafe extern "C" fn(*mut c_void)>,
    command: Option<unsafe extern "C" fn(*mut c_void, *const c_void)>,
    trigger_done: Option<unsafe extern "C" fn(*mut c_void)>,
}

const PW_VERSION_STREAM_EVENTS: u32 = 2;
const SPA_DIRECTION_INPUT: u32 = 0;
const PW_STREAM_FLAG_AUTOCONNECT: u32 = 1;
const PW_STATE_ERROR: c_int = -1;
const PW_STATE_UNCONNECTED: c_int = 0;
const PW_STATE_STREAMING: c_int = 3;
const SPA_DATA_MEMPTR: u32 = 1;
const SPA_DATA_MEMFD: u32 = 2;
const SPA_DATA_DMABUF: u32 = 3;
const SPA_CHUNK_FLAG_CORRUPTED: i32 = 1;
/// `SPA_META_VideoDamage`, and how many rectangles a buffer may carry (a producer with more
/// sends fewer, larger ones).
const SPA_META_VIDEO_DAMAGE: u32 = 3;
const DAMAGE_REGIONS: i32 = 16;
/// New frames whose damage the stream remembers (a consumer further behind gets the whole
/// frame as damage).
const DAMAGE_HISTORY: usize = 64;
/// `DRM_FORMAT_MOD_LINEAR` and `DRM_FORMAT_MOD_INVALID`.
const MOD_LINEAR: i64 = 0;
const MOD_INVALID: i64 = 0x00ff_ffff_ffff_ffff;
/// SPA video formats framebus takes, and what they become.
const SPA_VIDEO_FORMAT_BGRX: u32 = 8;
const SPA_VIDEO_FORMAT_BGRA: u32 = 12;
/// `DMA_BUF_IOCTL_SYNC` (`_IOW('b', 0, struct dma_buf_sync)`) and its flags.
const DMA_BUF_IOCTL_SYNC: libc::c_ulong = 0x4008_6200;
const DMA_BUF_SYNC_READ: u64 = 1;
const DMA_BUF_SYNC_END: u64 = 4;

type Opaque = c_void;

/// The functions of libpipewire we call (resolved once, kept for the process).
struct Lib {
    _lib: libloading::Library,
    thread_loop_new: unsafe extern "C" fn(*const c_char, *const c_void) -> *mut Opaque,
    thread_loop_get_loop: unsafe extern "C" fn(*mut Opaque) -> *mut Opaque,
    thread_loop_start: unsafe extern "C" fn(*mut Opaque) -> c_int,
    thread_loop_stop: unsafe extern "C" fn(*mut Opaque),
    thread_loop_destroy: unsafe extern "C" fn(*mut Opaque),
    thread_loop_lock: unsafe extern "C" fn(*mut Opaque),
    thread_loop_unlock: unsafe extern "C" fn(*mut Opaque),
    context_new: unsafe extern "C" fn(*mut Opaque, *mut Opaque, usize) -> *mut Opaque,
    context_destroy: unsafe extern "C" fn(*mut Opaque),
    context_connect_fd: unsafe extern "C" fn(*mut Opaque, c_int, *mut Opaque, usize) -> *mut Opaque,
    core_disconnect: unsafe extern "C" fn(*mut Opaque) -> c_int,
    properties_new_string: unsafe extern "C" fn(*const c_char) -> *mut Opaque,
    stream_new: unsafe extern "C" fn(*mut Opaque, *const c_char, *mut Opaque) -> *mut Opaque,
    stream_add_listener:
        unsafe extern "C" fn(*mut Opaque, *mut c_void, *const PwStreamEvents, *mut c_void),
    stream_connect:
        unsafe extern "C" fn(*mut Opaque, u32, u32, u32, *mut *const c_void, u32) -> c_int,
    stream_update_params: unsafe extern "C" fn(*mut Opaque, *mut *const c_void, u32) -> c_int,
    stream_dequeue_buffer: unsafe extern "C" fn(*mut Opaque) -> *mut PwBuffer,
    stream_queue_buffer: unsafe extern "C" fn(*mut Opaque, *mut PwBuffer) -> c_int,
    stream_disconnect: unsafe extern "C" fn(*mut Opaque) -> c_int,
    stream_destroy: unsafe extern "C" fn(*mut Opaque),
}

/// Load libpipewire once; the error says what is missing.
fn lib() -> Result<&'static Lib> {
    static LIB: OnceLock<std::result::Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(load)
        .as_ref()
        .map_err(|e| CaptureError::Portal {
            step: "load PipeWire",
            detail: e.clone(),
        })
}

/// Whether libpipewire can be loaded here (for backend selection and docs).
pub fn available() -> std::result::Result<(), String> {
    lib().map(|_| ()).map_err(|e| e.to_string())
}

fn load() -> std::result::Result<Lib, String> {
    // SAFETY: loading libpipewire runs its ELF constructors, which only set up
    // its own globals; it is a system library meant to be loaded this way.
    let l = unsafe { libloading::Library::new(LIBRARY) }.map_err(|e| {
        format!("{LIBRARY} not found: install PipeWire (the pipewire or libpipewire-0.3-0 package) to capture through the ScreenCast portal ({e})")
    })?;
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the symbol is declared with the C signature of PipeWire
            // 0.3's public header (pipewire/*.h), which the field type copies.
            *unsafe { l.get(concat!($name, "\0").as_bytes()) }
                .map_err(|e| format!("{LIBRARY} has no {}: {e} (PipeWire too old?)", $name))?
        };
    }
    let init: unsafe extern "C" fn(*mut c_int, *mut *mut *mut c_char) = sym!("pw_init");
    // SAFETY: pw_init accepts null argc/argv and may be called more than once.
    unsafe { init(ptr::null_mut(), ptr::null_mut()) };
    Ok(Lib {
        thread_loop_new: sym!("pw_thread_loop_new"),
        thread_loop_get_loop: sym!("pw_thread_loop_get_loop"),
        thread_loop_start: sym!("pw_thread_loop_start"),
        thread_loop_stop: sym!("pw_thread_loop_stop"),
        thread_loop_destroy: sym!("pw_thread_loop_destroy"),
        thread_loop_lock: sym!("pw_thread_loop_lock"),
        thread_loop_unlock: sym!("pw_thread_loop_unlock"),
        context_new: sym!("pw_context_new"),
        context_destroy: sym!("pw_context_destroy"),
        context_connect_fd: sym!("pw_context_connect_fd"),
        core_disconnect: sym!("pw_core_disconnect"),
        properties_new_string: sym!("pw_properties_new_string"),
        stream_new: sym!("pw_stream_new"),
        stream_add_listener: sym!("pw_stream_add_listener"),
        stream_connect: sym!("pw_stream_connect"),
        stream_update_params: sym!("pw_stream_update_params"),
        stream_dequeue_buffer: sym!("pw_stream_dequeue_buffer"),
        stream_queue_buffer: sym!("pw_stream_queue_buffer"),
        stream_disconnect: sym!("pw_stream_disconnect"),
        stream_destroy: sym!("pw_stream_destroy"),
        _lib: l,
    })
}

/// A pod as 8-byte aligned words (SPA reads pods in place).
fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut v = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: `v` has room for at least `bytes.len()` bytes; distinct allocations.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr().cast::<u8>(), bytes.len()) };
    v
}

/// The negotiated video format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoFormat {
    /// SPA video format id (BGRx or BGRA).
    pub spa_format: u32,
    pub width: u32,
    pub height: u32,
}

/// Our own mapping of a buffer's memory (a dup of its fd), only ever read.
pub(crate) struct Mapping {
    base: NonNull<u8>,
    map_len: usize,
    /// Offset of the buffer's data (spa_data.mapoffset) from `base`.
    skew: usize,
    maxsize: usize,
    dmabuf: Option<OwnedFd>,
}

// SAFETY: a private read-only mapping, valid until Drop, readable from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above; &Mapping only gives out the pointer.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(
        fd: BorrowedFd<'_>,
        mapoffset: u32,
        maxsize: u32,
        dmabuf: bool,
    ) -> std::io::Result<Mapping> {
        let page = framebus_core::page_size();
        let start = mapoffset as usize & !(page - 1);
        let skew = mapoffset as usize - start;
        let map_len = skew + maxsize as usize;
        if maxsize == 0 {
            return Err(std::io::Error::other("empty buffer"));
        }
        let owned = fd.try_clone_to_owned()?;
        if !dmabuf {
            // reading past the end of a memfd would be SIGBUS: check the size
            let st = rustix::fs::fstat(&owned)?;
            if (st.st_size as u64) < (start + map_len) as u64 {
                return Err(std::io::Error::other(
                    "the memfd is smaller than the buffer",
                ));
            }
        }
        // Writable when the fd allows it, though framebus never writes: a
        // foreign consumer that ignores the read-only flag (legacy DLPack)
        // then scribbles on a frame it holds instead of faulting.
        let map = |prot| {
            // SAFETY: a fresh shared mapping chosen by the kernel; it aliases
            // no Rust object. The fd is valid for the call.
            unsafe {
                rustix::mm::mmap(
                    ptr::null_mut(),
                    map_len,
                    prot,
                    rustix::mm::MapFlags::SHARED,
                    &owned,
                    start as u64,
                )
            }
        };
        use rustix::mm::ProtFlags;
        let p = map(ProtFlags::READ | ProtFlags::WRITE).or_else(|_| map(ProtFlags::READ))?;
        Ok(Mapping {
            base: NonNull::new(p.cast()).ok_or_else(|| std::io::Error::other("null mapping"))?,
            map_len,
            skew,
            maxsize: maxsize as usize,
            dmabuf: dmabuf.then_some(owned),
        })
    }

    /// The `len` bytes at `offset` of the buffer's data, if they lie inside it.
    fn range(&self, offset: usize, len: usize) -> Option<NonNull<u8>> {
        if offset.checked_add(len)? > self.maxsize || len == 0 {
            return None;
        }
        // SAFETY: skew + offset + len <= map_len: inside our mapping.
        Some(unsafe { self.base.add(self.skew + offset) })
    }

    /// `DMA_BUF_IOCTL_SYNC` around a CPU read of a DMA-BUF (no-op otherwise).
    fn sync(&self, end: bool) {
        if let Some(fd) = &self.dmabuf {
            let flags = DMA_BUF_SYNC_READ | if end { DMA_BUF_SYNC_END } else { 0 };
            // SAFETY: DMA_BUF_IOCTL_SYNC reads one u64 from the pointer, which
            // lives for the call; the fd is ours.
            unsafe { libc::ioctl(fd.as_raw_fd(), DMA_BUF_IOCTL_SYNC, &flags as *const u64) };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`, unmapped once; every
        // holder of a pointer into it holds an Arc<Mapping>, so none is left.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.map_len) };
    }
}

/// A raw PipeWire buffer pointer, used only under the thread-loop lock.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct BufPtr(*mut PwBuffer);
// SAFETY: the pointer is only dereferenced or handed to PipeWire on the loop
// thread or with the thread-loop lock held.
unsafe impl Send for BufPtr {}

struct Latest {
    buf: BufPtr,
    seq: u64,
    timestamp_ns: u64,
    held: usize,
}

#[derive(Default)]
struct State {
    format: Option<VideoFormat>,
    /// Every buffer PipeWire gave us (add_buffer), with our mapping of it.
    buffers: HashMap<BufPtr, Option<Arc<Mapping>>>,
    latest: Option<Latest>,
    /// Buffers held by consumers that are no longer the newest.
    out: HashMap<BufPtr, usize>,
    seq: u64,
    streaming: bool,
    error: Option<String>,
    dmabuf_seen: bool,
    /// (seq, the producer's damage since the previous new frame; None = unknown, the whole
    /// frame) of the latest new frames.
    damage_log: std::collections::VecDeque<(u64, Option<Vec<crate::Region>>)>,
    /// Damage of buffers dequeued but not delivered (unusable ones), carried into the next
    /// new frame; `damage_unknown` when one of them carried none.
    damage_carry: Vec<crate::Region>,
    damage_unknown: bool,
}

impl State {
    /// See [`Stream::damage_since`].
    fn damage_since(&self, after: u64, upto: u64) -> Option<Vec<crate::Region>> {
        if after >= upto {
            return Some(Vec::new());
        }
        if self
            .damage_log
            .front()
            .is_none_or(|(first, _)| *first > after + 1)
        {
            return None;
        }
        let mut out = Vec::new();
        for (seq, d) in &self.damage_log {
            if *seq > after && *seq <= upto {
                out.extend_from_slice(d.as_deref()?);
            }
        }
        Some(out)
    }

    fn held_buffers(&self) -> usize {
        self.out.len() + self.latest.as_ref().is_some_and(|l| l.held > 0) as usize
    }
}

/// The stream and its loop; shared by the source and every held buffer.
pub(crate) struct Stream {
    lib: &'static Lib,
    tloop: *mut Opaque,
    // Set once in `connect` (before the loop thread starts), read anywhere.
    context: AtomicPtr<Opaque>,
    core: AtomicPtr<Opaque>,
    stream: AtomicPtr<Opaque>,
    /// The `spa_hook` PipeWire links into the stream's listener list (48
    /// bytes needed; PipeWire writes it, hence the UnsafeCell).
    hook: Box<UnsafeCell<[usize; 8]>>,
    events: Box<PwStreamEvents>,
    state: Mutex<State>,
    cond: Condvar,
}

// SAFETY: the PipeWire objects are only used under the thread-loop lock or
// after the loop is stopped (Drop); State is behind a Mutex.
unsafe impl Send for Stream {}
// SAFETY: as above.
unsafe impl Sync for Stream {}

/// A buffer taken out of the stream: its pixels stay put until it is dropped,
/// then it goes back to PipeWire (from whatever thread drops it).
pub(crate) struct Hold {
    stream: Arc<Stream>,
    buf: BufPtr,
    mapping: Option<Arc<Mapping>>,
    /// Where the frame's pixels are.
    pub ptr: NonNull<u8>,
    pub len: usize,
    pub stride: usize,
    pub format: VideoFormat,
    pub seq: u64,
    pub timestamp_ns: u64,
}

// SAFETY: see BufPtr; the pointer into the mapping is read-only and the
// mapping (or, for MemPtr, the held buffer) keeps it valid.
unsafe impl Send for Hold {}
// SAFETY: as above.
unsafe impl Sync for Hold {}

impl Hold {
    /// True when the bytes are our own mapping, so they can outlive the
    /// buffer's removal: only then may a frame point at them (zero copy).
    pub fn mappable(&self) -> bool {
        self.mapping.as_ref().is_some_and(|m| m.dmabuf.is_none())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let s = &*self.stream;
        s.lock_loop();
        {
            let mut st = s.state();
            if let Some(l) = st.latest.as_mut().filter(|l| l.buf == self.buf) {
                // still the newest: keep it (unqueued) for the next grab
                l.held = l.held.saturating_sub(1);
            } else if let Some(n) = st.out.get_mut(&self.buf) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.out.remove(&self.buf);
                    if st.buffers.contains_key(&self.buf) {
                        // SAFETY: the buffer is still the stream's (it is in
                        // `buffers`, which remove_buffer updates under this
                        // same lock) and the thread-loop lock is held.
                        unsafe { (s.lib.stream_queue_buffer)(s.pw(), self.buf.0) };
                    }
                }
            }
        }
        s.unlock_loop();
    }
}

impl Stream {
    /// The `pw_stream`.
    fn pw(&self) -> *mut Opaque {
        self.stream.load(Ordering::Acquire)
    }
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn lock_loop(&self) {
        // SAFETY: tloop is valid until Drop, which cannot run while &self exists.
        unsafe { (self.lib.thread_loop_lock)(self.tloop) }
    }
    fn unlock_loop(&self) {
        // SAFETY: as lock_loop; called once per lock_loop on the same thread.
        unsafe { (self.lib.thread_loop_unlock)(self.tloop) }
    }

    /// Connect to the portal's PipeWire remote and start a video input
    /// stream on `node_id`.
    pub fn connect(fd: OwnedFd, node_id: u32) -> Result<Arc<Stream>> {
        let lib = lib()?;
        let fail = |step: &'static str, detail: &str| CaptureError::Portal {
            step,
            detail: detail.to_string(),
        };
        let name = CString::new("framebus-portal").unwrap_or_default();
        // SAFETY: a valid C string; null props are allowed.
        let tloop = unsafe { (lib.thread_loop_new)(name.as_ptr(), ptr::null()) };
        if tloop.is_null() {
            return Err(fail(
                "create the PipeWire loop",
                "pw_thread_loop_new failed",
            ));
        }
        let events = Box::new(PwStreamEvents {
            version: PW_VERSION_STREAM_EVENTS,
            destroy: None,
            state_changed: Some(on_state_changed),
            control_info: None,
            io_changed: None,
            param_changed: Some(on_param_changed),
            add_buffer: Some(on_add_buffer),
            remove_buffer: Some(on_remove_buffer),
            process: Some(on_process),
            drained: None,
            command: None,
            trigger_done: None,
        });
        let s = Arc::new(Stream {
            lib,
            tloop,
            context: AtomicPtr::new(ptr::null_mut()),
            core: AtomicPtr::new(ptr::null_mut()),
            stream: AtomicPtr::new(ptr::null_mut()),
            hook: Box::new(UnsafeCell::new([0; 8])),
            events,
            state: Mutex::default(),
            cond: Condvar::new(),
        });
        // The callbacks' data: valid while `s` lives (Drop removes the hook
        // before the Stream goes away). Nothing runs on the loop before
        // pw_thread_loop_start, but PipeWire may call back synchronously.
        let raw = Arc::as_ptr(&s) as *mut c_void;
        // SAFETY: tloop is valid.
        let loop_ = unsafe { (lib.thread_loop_get_loop)(tloop) };
        // SAFETY: a valid loop, no props.
        let context = unsafe { (lib.context_new)(loop_, ptr::null_mut(), 0) };
        s.context.store(context, Ordering::Release);
        if context.is_null() {
            return Err(fail("create the PipeWire context", "pw_context_new failed"));
        }
        let raw_fd = fd.into_raw_fd();
        // SAFETY: valid context; PipeWire takes ownership of the fd (closes it
        // on disconnect or failure).
        let core = unsafe { (lib.context_connect_fd)(context, raw_fd, ptr::null_mut(), 0) };
        s.core.store(core, Ordering::Release);
        if core.is_null() {
            return Err(fail(
                "connect to the portal's PipeWire remote",
                &std::io::Error::last_os_error().to_string(),
            ));
        }
        let props = CString::new(
            "media.type=Video media.category=Capture media.role=Screen node.name=framebus",
        )
        .unwrap_or_default();
        let sname = CString::new("framebus-screencast").unwrap_or_default();
        // SAFETY: valid core and strings; pw_stream_new takes the properties.
        let stream = unsafe {
            (lib.stream_new)(
                core,
                sname.as_ptr(),
                (lib.properties_new_string)(props.as_ptr()),
            )
        };
        s.stream.store(stream, Ordering::Release);
        if stream.is_null() {
            return Err(fail("create the PipeWire stream", "pw_stream_new failed"));
        }
        // SAFETY: the hook storage (zeroed, large enough) and the events live
        // in `s` as long as the stream is listened to; `raw` is the data
        // pointer the callbacks get (see above).
        unsafe { (lib.stream_add_listener)(stream, s.hook.get().cast(), &*s.events, raw) };
        let enum_format = aligned(&enum_format_pod());
        let mut params = [enum_format.as_ptr() as *const c_void];
        // SAFETY: a valid stream; params point at a well-formed pod that
        // outlives the call (PipeWire copies it).
        let rc = unsafe {
            (lib.stream_connect)(
                stream,
                SPA_DIRECTION_INPUT,
                node_id,
                PW_STREAM_FLAG_AUTOCONNECT,
                params.as_mut_ptr(),
                1,
            )
        };
        if rc < 0 {
            return Err(fail(
                "connect the PipeWire stream",
                &std::io::Error::from_raw_os_error(-rc).to_string(),
            ));
        }
        // SAFETY: valid loop; from here on callbacks run on its thread.
        if unsafe { (lib.thread_loop_start)(tloop) } < 0 {
            return Err(fail(
                "start the PipeWire loop",
                "pw_thread_loop_start failed",
            ));
        }
        Ok(s)
    }

    /// Wait until a frame newer than `after_seq` exists, or the stream fails,
    /// or `timeout` passes (Ok(false)).
    pub fn wait_frame(&self, after_seq: u64, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut st = self.state();
        loop {
            if let Some(e) = &st.error {
                return Err(CaptureError::Portal {
                    step: "PipeWire stream",
                    detail: e.clone(),
                });
            }
            if st.latest.as_ref().is_some_and(|l| l.seq > after_seq) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            st = self
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The negotiated format, once known.
    pub fn format(&self) -> Option<VideoFormat> {
        self.state().format
    }

    /// Sequence number of the newest frame (0 = none yet).
    pub fn seq(&self) -> u64 {
        self.state().latest.as_ref().map_or(0, |l| l.seq)
    }

    /// The producer's damage of the new frames after `after` up to `upto` (sequence
    /// numbers), in stream pixels; None when some of it is unknown (a buffer without damage
    /// metadata, or history no longer reaching back that far).
    pub fn damage_since(&self, after: u64, upto: u64) -> Option<Vec<crate::Region>> {
        self.state().damage_since(after, upto)
    }

    /// How many buffers the stream has, and how many consumers hold.
    pub fn buffer_counts(&self) -> (usize, usize) {
        let st = self.state();
        (st.buffers.len(), st.held_buffers())
    }

    /// Take the newest buffer (it stays out of PipeWire's hands until the
    /// returned hold is dropped).
    pub fn latest(self: &Arc<Self>) -> Result<Hold> {
        self.lock_loop();
        let r = self.latest_locked();
        self.unlock_loop();
        r
    }

    fn latest_locked(self: &Arc<Self>) -> Result<Hold> {
        let mut st = self.state();
        let portal = |detail: String| CaptureError::Portal {
            step: "reading a PipeWire buffer",
            detail,
        };
        let format = st
            .format
            .ok_or_else(|| portal("no format negotiated yet".into()))?;
        let (buf, seq, ts) = match &st.latest {
            Some(l) => (l.buf, l.seq, l.timestamp_ns),
            None => return Err(portal("no frame yet".into())),
        };
        let mapping = st.buffers.get(&buf).cloned().flatten();
        // SAFETY: `buf` is the stream's (in `latest`, cleared by
        // remove_buffer under this lock) and the thread-loop lock is held.
        let (data, chunk) = unsafe {
            let sb = &*(*buf.0).buffer;
            if sb.n_datas == 0 || sb.datas.is_null() {
                return Err(portal("a buffer without data".into()));
            }
            let d = &*sb.datas;
            if d.chunk.is_null() {
                return Err(portal("a buffer without a chunk".into()));
            }
            (d, &*d.chunk)
        };
        let min_stride = format.width as usize * 4;
        let stride = if chunk.stride > 0 {
            chunk.stride as usize
        } else {
            min_stride
        };
        if stride < min_stride {
            return Err(portal(format!(
                "stride {stride} is less than {min_stride} bytes for {} pixels",
                format.width
            )));
        }
        let tight = stride * (format.height as usize - 1) + min_stride;
        let offset = chunk.offset as usize % (data.maxsize.max(1) as usize);
        // whole rows when they fit (a frame spans stride × height), else tight
        let full = stride * format.height as usize;
        let len = if offset + full <= data.maxsize as usize {
            full
        } else {
            tight
        };
        let ptr = match (&mapping, data.type_) {
            (Some(m), _) => m.range(offset, len),
            (None, SPA_DATA_MEMPTR) if !data.data.is_null() => {
                if offset + len > data.maxsize as usize {
                    None
                } else {
                    // SAFETY: inside the buffer's own memory (checked above).
                    NonNull::new(unsafe { data.data.cast::<u8>().add(offset) })
                }
            }
            (None, t) => {
                return Err(portal(format!(
                    "buffer data type {t} could not be mapped{}",
                    if t == SPA_DATA_DMABUF {
                        " (a tiled or unmappable DMA-BUF: GPU frames are not supported yet)"
                    } else {
                        ""
                    }
                )))
            }
        }
        .ok_or_else(|| {
            portal(format!(
                "a {}x{} frame (stride {stride}) at offset {offset} does not fit the {}-byte buffer",
                format.width, format.height, data.maxsize
            ))
        })?;
        if let Some(l) = st.latest.as_mut() {
            l.held += 1;
        }
        drop(st);
        if let Some(m) = &mapping {
            m.sync(false);
        }
        Ok(Hold {
            stream: self.clone(),
            buf,
            mapping,
            ptr,
            len,
            stride,
            format,
            seq,
            timestamp_ns: ts,
        })
    }

    /// Copy a held buffer's bytes (`rows` of `row_len` bytes starting at
    /// byte `start` of each source row) into `dst` rows of `dst_stride`,
    /// bracketing the read with DMA-BUF syncs when it is one.
    pub fn copy_rows(
        hold: &Hold,
        start: usize,
        row_len: usize,
        rows: std::ops::Range<usize>,
        dst: &mut [u8],
        dst_stride: usize,
    ) {
        // SAFETY: `hold.ptr` is valid for `hold.len` bytes while the hold
        // lives and nobody writes a held buffer (the producer only writes
        // buffers we queued back).
        let src = unsafe { std::slice::from_raw_parts(hold.ptr.as_ptr(), hold.len) };
        for (i, y) in rows.enumerate() {
            let s = y * hold.stride + start;
            let d = i * dst_stride;
            if let (Some(s), Some(d)) = (src.get(s..s + row_len), dst.get_mut(d..d + row_len)) {
                d.copy_from_slice(s);
            }
        }
        if let Some(m) = &hold.mapping {
            m.sync(true);
        }
    }

    /// Whether the stream failed (an error, or disconnected).
    pub fn failed(&self) -> bool {
        self.state().error.is_some()
    }

    /// Whether a DMA-BUF buffer was ever offered.
    pub fn saw_dmabuf(&self) -> bool {
        self.state().dmabuf_seen
    }

    /// Whether the stream is running.
    pub fn streaming(&self) -> bool {
        self.state().streaming
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let l = self.lib;
        let (stream, core, context) = (
            *self.stream.get_mut(),
            *self.core.get_mut(),
            *self.context.get_mut(),
        );
        // SAFETY: no Hold exists (each owns an Arc<Stream>) and we are not on
        // the loop thread (callbacks own no Arc). After stop no callback runs
        // on the loop; the hook is unlinked before the stream is touched, so
        // no callback sees this Stream again. Then children before parents.
        unsafe {
            (l.thread_loop_stop)(self.tloop);
            hook_remove(self.hook.get().cast());
            if !stream.is_null() {
                (l.stream_disconnect)(stream);
                (l.stream_destroy)(stream);
            }
            if !core.is_null() {
                (l.core_disconnect)(core);
            }
            if !context.is_null() {
                (l.context_destroy)(context);
            }
            (l.thread_loop_destroy)(self.tloop);
        }
    }
}

/// `spa_hook_remove` (an inline function in spa/utils/hook.h): unlink the
/// hook from its list (`struct spa_list { next, prev }` at its start) and
/// call its `removed` callback (the 5th word) if any.
///
/// # Safety
/// `hook` points at a `spa_hook` that is linked into a live list, or zeroed.
unsafe fn hook_remove(hook: *mut usize) {
    // SAFETY: the caller's contract; the words are the hook's link, cb and
    // removed fields in that order.
    unsafe {
        let next = *hook as *mut usize;
        let prev = *hook.add(1) as *mut usize;
        if !next.is_null() && !prev.is_null() {
            *prev = next as usize; // prev->next = next
            *next.add(1) = prev as usize; // next->prev = prev
            *hook = 0;
            *hook.add(1) = 0;
        }
        let removed = *hook.add(4);
        if removed != 0 {
            let f: unsafe extern "C" fn(*mut usize) = std::mem::transmute(removed);
            f(hook);
        }
    }
}

/// The EnumFormat we offer: raw video, BGRx or BGRA, any size and rate.
pub fn enum_format_pod() -> Vec<u8> {
    Value::Object {
        object_type: key::OBJECT_FORMAT,
        id: key::PARAM_ENUM_FORMAT,
        props: vec![
            (key::FORMAT_MEDIA_TYPE, Value::Id(key::MEDIA_TYPE_VIDEO)),
            (key::FORMAT_MEDIA_SUBTYPE, Value::Id(key::MEDIA_SUBTYPE_RAW)),
            (
                key::VIDEO_FORMAT,
                Value::Choice {
                    kind: pod::choice::ENUM,
                    values: vec![
                        Value::Id(SPA_VIDEO_FORMAT_BGRX),
                        Value::Id(SPA_VIDEO_FORMAT_BGRX),
                        Value::Id(SPA_VIDEO_FORMAT_BGRA),
                    ],
                },
            ),
            (
                key::VIDEO_SIZE,
                Value::Choice {
                    kind: pod::choice::RANGE,
                    values: vec![
                        Value::Rectangle(1920, 1080),
                        Value::Rectangle(1, 1),
                        Value::Rectangle(16384, 16384),
                    ],
                },
            ),
            (
                key::VIDEO_FRAMERATE,
                Value::Choice {
                    kind: pod::choice::RANGE,
                    values: vec![
                        Value::Fraction(0, 1),
                        Value::Fraction(0, 1),
                        Value::Fraction(1000, 1),
                    ],
                },
            ),
        ],
    }
    .to_pod()
}

/// The Buffers param we answer a format with: 2–16 buffers (8 preferred, so
/// frames can be held without a copy), in a memfd, plain memory or a DMA-BUF.
pub fn buffers_pod() -> Vec<u8> {
    Value::Object {
        object_type: key::OBJECT_PARAM_BUFFERS,
        id: key::PARAM_BUFFERS,
        props: vec![
            (
                key::BUFFERS_BUFFERS,
                Value::Choice {
                    kind: pod::choice::RANGE,
                    values: vec![Value::Int(8), Value::Int(2), Value::Int(16)],
                },
            ),
            (
                key::BUFFERS_DATA_TYPE,
                Value::Choice {
                    kind: pod::choice::FLAGS,
                    values: vec![Value::Int(
                        (1 << SPA_DATA_MEMFD) | (1 << SPA_DATA_MEMPTR) | (1 << SPA_DATA_DMABUF),
                    )],
                },
            ),
        ],
    }
    .to_pod()
}

/// The Meta param asking for the producer's damage rectangles (`SPA_META_VideoDamage`) with
/// each buffer: room for 1–16 `spa_meta_region`s.
pub fn damage_meta_pod() -> Vec<u8> {
    let region = std::mem::size_of::<SpaMetaRegion>() as i32;
    Value::Object {
        object_type: key::OBJECT_PARAM_META,
        id: key::PARAM_META,
        props: vec![
            (key::META_TYPE, Value::Id(SPA_META_VIDEO_DAMAGE)),
            (
                key::META_SIZE,
                Value::Choice {
                    kind: pod::choice::RANGE,
                    values: vec![
                        Value::Int(region * DAMAGE_REGIONS),
                        Value::Int(region),
                        Value::Int(region * DAMAGE_REGIONS),
                    ],
                },
            ),
        ],
    }
    .to_pod()
}

/// The damage a buffer carries: its valid `spa_meta_region`s (the list ends at the first
/// empty one), or None when it has no damage metadata or no valid rectangle (then the whole
/// frame may have changed).
///
/// # Safety
/// `sb` is a buffer PipeWire handed us (dequeued and not queued back): its `metas` array
/// holds `n_metas` entries whose `data` points at `size` readable bytes.
unsafe fn buffer_damage(sb: &SpaBuffer) -> Option<Vec<crate::Region>> {
    if sb.n_metas == 0 || sb.metas.is_null() {
        return None;
    }
    // SAFETY: the caller's contract: `n_metas` spa_meta entries.
    let metas =
        unsafe { std::slice::from_raw_parts(sb.metas as *const SpaMeta, sb.n_metas as usize) };
    let meta = metas
        .iter()
        .find(|m| m.type_ == SPA_META_VIDEO_DAMAGE && !m.data.is_null())?;
    let n = meta.size as usize / std::mem::size_of::<SpaMetaRegion>();
    // SAFETY: the caller's contract: `size` bytes at `data`, which PipeWire aligns for the
    // meta's type; `n` whole regions fit.
    let regions = unsafe { std::slice::from_raw_parts(meta.data as *const SpaMetaRegion, n) };
    let out: Vec<crate::Region> = regions
        .iter()
        .take_while(|r| r.width > 0 && r.height > 0)
        .map(|r| crate::Region::new(r.x, r.y, r.width, r.height))
        .collect();
    (!out.is_empty()).then_some(out)
}

/// Parse a negotiated Format pod: Ok(format) or Err(why it is unusable).
pub fn parse_format(pod_bytes: &[u8]) -> std::result::Result<VideoFormat, String> {
    let (_, _, props) = pod::object_props(pod_bytes).ok_or("not a format object")?;
    let get = |k| {
        props
            .iter()
            .find(|p| p.0 == k)
            .and_then(|p| pod::fixed(&p.1))
    };
    let spa_format = match get(key::VIDEO_FORMAT) {
        Some(Value::Id(f)) => *f,
        _ => return Err("the format has no video format".into()),
    };
    if spa_format != SPA_VIDEO_FORMAT_BGRX && spa_format != SPA_VIDEO_FORMAT_BGRA {
        return Err(format!(
            "video format {spa_format} (SPA id) is not BGRx or BGRA"
        ));
    }
    let (width, height) = match get(key::VIDEO_SIZE) {
        Some(Value::Rectangle(w, h)) if *w > 0 && *h > 0 && *w <= 65536 && *h <= 65536 => (*w, *h),
        other => return Err(format!("bad video size {other:?}")),
    };
    if let Some(Value::Long(m)) = get(key::VIDEO_MODIFIER) {
        if *m != MOD_LINEAR && *m != MOD_INVALID {
            return Err(format!(
                "the producer negotiated a tiled DMA-BUF (modifier {m:#x}); framebus reads only \
                 linear buffers for now (GPU frames are a separate issue)"
            ));
        }
    }
    Ok(VideoFormat {
        spa_format,
        width,
        height,
    })
}

/// # Safety
/// `data` is the `Stream` registered with the listener, alive (Drop destroys
/// the stream before the Stream goes away).
unsafe fn stream_of<'a>(data: *mut c_void) -> &'a Stream {
    // SAFETY: the caller's contract.
    unsafe { &*(data as *const Stream) }
}

unsafe extern "C" fn on_state_changed(
    data: *mut c_void,
    _old: c_int,
    state: c_int,
    error: *const c_char,
) {
    // SAFETY: called by PipeWire with our listener data.
    let s = unsafe { stream_of(data) };
    let mut st = s.state();
    st.streaming = state == PW_STATE_STREAMING;
    if state == PW_STATE_ERROR
        || (state == PW_STATE_UNCONNECTED && st.error.is_none() && st.seq > 0)
    {
        let msg = if error.is_null() {
            "the stream was disconnected (the portal session ended?)".to_string()
        } else {
            // SAFETY: PipeWire passes a valid C string or null.
            unsafe { CStr::from_ptr(error) }
                .to_string_lossy()
                .into_owned()
        };
        st.error = Some(msg);
    }
    s.cond.notify_all();
}

unsafe extern "C" fn on_param_changed(data: *mut c_void, id: u32, param: *const c_void) {
    // SAFETY: called by PipeWire with our listener data.
    let s = unsafe { stream_of(data) };
    if id != key::PARAM_FORMAT {
        return;
    }
    if param.is_null() {
        s.state().format = None;
        return;
    }
    // SAFETY: a pod starts with its u32 body size; the whole pod (header +
    // body) is readable for the duration of the call.
    let bytes = unsafe {
        let size = *(param as *const u32) as usize;
        std::slice::from_raw_parts(param as *const u8, 8 + size.min(1 << 20))
    };
    match parse_format(bytes) {
        Ok(f) => {
            s.state().format = Some(f);
            let b = aligned(&buffers_pod());
            let m = aligned(&damage_meta_pod());
            let mut params = [b.as_ptr() as *const c_void, m.as_ptr() as *const c_void];
            // SAFETY: on the loop thread (lock held); valid pods, copied.
            unsafe { (s.lib.stream_update_params)(s.pw(), params.as_mut_ptr(), 2) };
        }
        Err(e) => {
            let mut st = s.state();
            st.error = Some(e);
            s.cond.notify_all();
        }
    }
}

unsafe extern "C" fn on_add_buffer(data: *mut c_void, buf: *mut PwBuffer) {
    // SAFETY: called by PipeWire with our listener data.
    let s = unsafe { stream_of(data) };
    // SAFETY: PipeWire gives a valid buffer for the duration of the call.
    let mapping = unsafe {
        let sb = &*(*buf).buffer;
        if sb.n_datas == 0 || sb.datas.is_null() {
            None
        } else {
            let d = &*sb.datas;
            let is_fd = d.type_ == SPA_DATA_MEMFD || d.type_ == SPA_DATA_DMABUF;
            if is_fd && d.fd >= 0 && d.fd <= i32::MAX as i64 {
                let fd = BorrowedFd::borrow_raw(d.fd as i32);
                Mapping::new(fd, d.mapoffset, d.maxsize, d.type_ == SPA_DATA_DMABUF)
                    .ok()
                    .map(Arc::new)
            } else {
                None
            }
        }
    };
    let mut st = s.state();
    // SAFETY: as above.
    if unsafe { (*(*buf).buffer).n_datas > 0 && (*(*(*buf).buffer).datas).type_ == SPA_DATA_DMABUF }
    {
        st.dmabuf_seen = true;
    }
    st.buffers.insert(BufPtr(buf), mapping);
}

unsafe extern "C" fn on_remove_buffer(data: *mut c_void, buf: *mut PwBuffer) {
    // SAFETY: called by PipeWire with our listener data.
    let s = unsafe { stream_of(data) };
    let mut st = s.state();
    let b = BufPtr(buf);
    // Holders keep their Arc<Mapping>; the pointer itself must not be queued.
    st.buffers.remove(&b);
    st.out.remove(&b);
    if st.latest.as_ref().is_some_and(|l| l.buf == b) {
        st.latest = None;
    }
}

unsafe extern "C" fn on_process(data: *mut c_void) {
    // SAFETY: called by PipeWire with our listener data.
    let s = unsafe { stream_of(data) };
    let l = s.lib;
    let mut newest: *mut PwBuffer = ptr::null_mut();
    let mut damage: Vec<crate::Region> = Vec::new();
    let mut unknown = false;
    loop {
        // SAFETY: on the loop thread, a valid stream.
        let b = unsafe { (l.stream_dequeue_buffer)(s.pw()) };
        if b.is_null() {
            break;
        }
        // Every buffer's damage counts, delivered or not: the next frame delivered holds
        // its changes too.
        // SAFETY: a dequeued buffer is valid until queued back.
        match unsafe { buffer_damage(&*(*b).buffer) } {
            Some(d) => damage.extend(d),
            None => unknown = true,
        }
        // SAFETY: a dequeued buffer is valid until queued back.
        let usable = unsafe {
            let sb = &*(*b).buffer;
            sb.n_datas > 0
                && !sb.datas.is_null()
                && !(*sb.datas).chunk.is_null()
                && (*(*sb.datas).chunk).size > 0
                && (*(*sb.datas).chunk).flags & SPA_CHUNK_FLAG_CORRUPTED == 0
        };
        if !usable {
            // SAFETY: ours to queue back, on the loop thread.
            unsafe { (l.stream_queue_buffer)(s.pw(), b) };
            continue;
        }
        if !newest.is_null() {
            // SAFETY: as above.
            unsafe { (l.stream_queue_buffer)(s.pw(), newest) };
        }
        newest = b;
    }
    let mut st = s.state();
    st.damage_carry.append(&mut damage);
    st.damage_unknown |= unknown;
    if newest.is_null() {
        return;
    }
    st.seq += 1;
    let seq = st.seq;
    let carried = std::mem::take(&mut st.damage_carry);
    let known = !std::mem::take(&mut st.damage_unknown);
    st.damage_log.push_back((seq, known.then_some(carried)));
    while st.damage_log.len() > DAMAGE_HISTORY {
        st.damage_log.pop_front();
    }
    if let Some(old) = st.latest.take() {
        if old.held > 0 {
            st.out.insert(old.buf, old.held);
        } else {
            // SAFETY: not held by anyone: back to PipeWire, on the loop thread.
            unsafe { (l.stream_queue_buffer)(s.pw(), old.buf.0) };
        }
    }
    st.latest = Some(Latest {
        buf: BufPtr(newest),
        seq,
        timestamp_ns: framebus_core::monotonic_ns(),
        held: 0,
    });
    s.cond.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_keeps_the_bytes() {
        let pod = enum_format_pod();
        let words = aligned(&pod);
        // SAFETY: reading the words' own bytes.
        let back = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), pod.len()) };
        assert_eq!(back, &pod[..]);
    }

    #[test]
    fn format_parse_accepts_bgrx_and_refuses_the_rest() {
        let fmt = |f: u32, w: u32, h: u32, modifier: Option<i64>| {
            let mut props = vec![
                (key::FORMAT_MEDIA_TYPE, Value::Id(key::MEDIA_TYPE_VIDEO)),
                (key::VIDEO_FORMAT, Value::Id(f)),
                (key::VIDEO_SIZE, Value::Rectangle(w, h)),
            ];
            if let Some(m) = modifier {
                props.push((key::VIDEO_MODIFIER, Value::Long(m)));
            }
            Value::Object {
                object_type: key::OBJECT_FORMAT,
                id: key::PARAM_FORMAT,
                props,
            }
            .to_pod()
        };
        assert_eq!(
            parse_format(&fmt(8, 640, 480, None)),
            Ok(VideoFormat {
                spa_format: 8,
                width: 640,
                height: 480
            })
        );
        assert!(parse_format(&fmt(8, 640, 480, Some(0))).is_ok());
        let e = parse_format(&fmt(8, 640, 480, Some(0x0100_0000_0000_0001))).unwrap_err();
        assert!(e.contains("tiled DMA-BUF"), "{e}");
        assert!(parse_format(&fmt(2, 640, 480, None))
            .unwrap_err()
            .contains("not BGRx"));
        assert!(parse_format(&fmt(8, 0, 480, None)).is_err());
        assert!(parse_format(&[0u8; 3]).is_err());
    }

    #[test]
    fn mapping_reads_the_buffer_at_its_offset_and_checks_bounds() {
        use std::io::Write;
        let fd = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let mut f = std::fs::File::from(fd);
        let bytes: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&bytes).unwrap();
        // a buffer at offset 5000 (not page-aligned), 4000 bytes long
        let m = Mapping::new(std::os::fd::AsFd::as_fd(&f), 5000, 4000, false).unwrap();
        let p = m.range(10, 100).unwrap();
        // SAFETY: inside our mapping, which lives until the end of the test.
        let got = unsafe { std::slice::from_raw_parts(p.as_ptr(), 100) };
        assert_eq!(got, &bytes[5010..5110]);
        assert!(m.range(3990, 11).is_none(), "past the buffer's end");
        assert!(m.range(0, 0).is_none());
        assert!(m.range(usize::MAX, 2).is_none());
        // a memfd shorter than the buffer claims is refused (it would SIGBUS)
        let e = Mapping::new(std::os::fd::AsFd::as_fd(&f), 8192, 8192, false);
        assert!(e.is_err());
        assert!(Mapping::new(std::os::fd::AsFd::as_fd(&f), 0, 0, false).is_err());
    }

    #[test]
    fn a_linear_dmabuf_is_mapped_at_its_offset_with_syncs_around_reads() {
        // No DMA-BUF exporter exists on these machines (no GPU, no udmabuf, no dma-heap): a
        // memfd stands in. The mapping takes the DMA-BUF path (no size check, the fd kept
        // for DMA_BUF_IOCTL_SYNC, whose ENOTTY on a memfd is ignored like any sync error).
        use std::io::Write;
        let fd = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let mut f = std::fs::File::from(fd);
        let bytes: Vec<u8> = (0..4 * 4096u32).map(|i| (i % 241) as u8).collect();
        f.write_all(&bytes).unwrap();
        let m = Mapping::new(std::os::fd::AsFd::as_fd(&f), 4096 + 64, 8192, true).unwrap();
        assert!(m.dmabuf.is_some(), "the fd is kept for the syncs");
        m.sync(false);
        let p = m.range(0, 8192).unwrap();
        // SAFETY: inside our mapping, which lives until the end of the test.
        let got = unsafe { std::slice::from_raw_parts(p.as_ptr(), 8192) };
        assert_eq!(got, &bytes[4096 + 64..4096 + 64 + 8192]);
        m.sync(true);
        assert!(m.range(8000, 193).is_none(), "past the buffer's end");
    }

    #[test]
    fn damage_meta_asks_for_1_to_16_regions_of_video_damage() {
        let pod_bytes = damage_meta_pod();
        let (object_type, id, props) = pod::object_props(&pod_bytes).unwrap();
        assert_eq!((object_type, id), (key::OBJECT_PARAM_META, key::PARAM_META));
        assert_eq!(props[0], (key::META_TYPE, Value::Id(3)));
        assert_eq!(
            props[1],
            (
                key::META_SIZE,
                Value::Choice {
                    kind: pod::choice::RANGE,
                    values: vec![Value::Int(256), Value::Int(16), Value::Int(256)],
                }
            )
        );
    }

    #[test]
    fn buffer_damage_reads_regions_up_to_the_first_empty_one() {
        let r = |x, y, width, height| SpaMetaRegion {
            x,
            y,
            width,
            height,
        };
        // The damage of a buffer whose metas are a header and (with `damage_meta`) a
        // VideoDamage meta over `regions`.
        let read = |mut regions: Vec<SpaMetaRegion>, damage_meta: bool| {
            let mut metas = [
                SpaMeta {
                    type_: 1, // a header: skipped
                    size: 32,
                    data: ptr::null_mut(),
                },
                SpaMeta {
                    type_: SPA_META_VIDEO_DAMAGE,
                    size: (regions.len() * std::mem::size_of::<SpaMetaRegion>()) as u32,
                    data: regions.as_mut_ptr().cast(),
                },
            ];
            let sb = SpaBuffer {
                n_metas: 1 + damage_meta as u32,
                n_datas: 0,
                metas: metas.as_mut_ptr().cast(),
                datas: ptr::null_mut(),
            };
            // SAFETY: `sb` describes the metas above, which outlive the call.
            unsafe { buffer_damage(&sb) }
        };
        let regions = || {
            vec![
                r(1, 2, 3, 4),
                r(10, 20, 30, 40),
                r(0, 0, 0, 0),
                r(5, 5, 5, 5),
            ]
        };
        assert_eq!(
            read(regions(), true),
            Some(vec![
                crate::Region::new(1, 2, 3, 4),
                crate::Region::new(10, 20, 30, 40)
            ])
        );
        // No valid rectangle, or no damage meta at all: unknown (the whole frame).
        assert_eq!(read(vec![r(0, 0, 0, 0), r(1, 1, 1, 1)], true), None);
        assert_eq!(read(regions(), false), None);
    }

    #[test]
    fn damage_since_unions_new_frames_and_knows_what_it_does_not_know() {
        let reg = |x| crate::Region::new(x, 0, 1, 1);
        let mut st = State::default();
        assert_eq!(st.damage_since(0, 1), None, "no history");
        st.damage_log.push_back((1, Some(vec![reg(1)])));
        st.damage_log.push_back((2, Some(vec![reg(2)])));
        st.damage_log.push_back((3, None));
        st.damage_log.push_back((4, Some(vec![reg(4)])));
        assert_eq!(st.damage_since(2, 2), Some(vec![]), "the same frame");
        assert_eq!(st.damage_since(0, 2), Some(vec![reg(1), reg(2)]));
        assert_eq!(st.damage_since(1, 2), Some(vec![reg(2)]));
        assert_eq!(st.damage_since(2, 4), None, "frame 3 had no damage meta");
        assert_eq!(st.damage_since(3, 4), Some(vec![reg(4)]));
        st.damage_log.pop_front();
        assert_eq!(
            st.damage_since(0, 4),
            None,
            "history no longer reaches frame 1"
        );
    }

    #[test]
    fn hook_remove_unlinks_from_a_list() {
        // head <-> hook <-> other <-> head, as spa_list links them
        let mut head = [0usize; 2];
        let mut hook = [0usize; 8];
        let mut other = [0usize; 2];
        let (h, k, o) = (
            head.as_mut_ptr() as usize,
            hook.as_mut_ptr() as usize,
            other.as_mut_ptr() as usize,
        );
        head = [k, o];
        hook[0] = o;
        hook[1] = h;
        other = [h, k];
        // SAFETY: `hook` is linked into a live three-element list.
        unsafe { hook_remove(hook.as_mut_ptr()) };
        assert_eq!(head, [o, o]);
        assert_eq!(other, [h, h]);
        assert_eq!(&hook[..2], &[0, 0]);
        // a zeroed hook (never linked) is left alone
        let mut zero = [0usize; 8];
        // SAFETY: zeroed.
        unsafe { hook_remove(zero.as_mut_ptr()) };
    }

    #[test]
    fn missing_library_error_names_the_library() {
        // Whatever this machine has, the message format is fixed.
        if let Err(e) = available() {
            assert!(e.contains("libpipewire-0.3.so.0"), "{e}");
        }
    }
}
