//! `wl_shm`: pools mapped from the client's fd, buffers over them, and the one checked
//! write path into a client buffer (bounds and file size checked before every copy).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use rustix::mm::{MapFlags, ProtFlags};
use wayland_server::protocol::{wl_buffer, wl_shm, wl_shm_pool};
use wayland_server::{Client, DataInit, Dispatch, DisplayHandle, GlobalDispatch, New, Resource};

use crate::state::State;

/// The formats the compositor accepts for buffers (and advertises on `wl_shm`).
pub const FORMATS: [wl_shm::Format; 4] = [
    wl_shm::Format::Xrgb8888,
    wl_shm::Format::Argb8888,
    wl_shm::Format::Xbgr8888,
    wl_shm::Format::Abgr8888,
];

/// A shared, writable mapping of a client's pool fd.
pub struct ShmMap {
    fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this struct; every access goes through
// the `Mutex` that wraps each `ShmMap`, so moving or sharing it between threads is sound.
unsafe impl Send for ShmMap {}

impl ShmMap {
    fn map(fd: OwnedFd, len: usize) -> rustix::io::Result<ShmMap> {
        // SAFETY: a fresh mapping (null hint, no MAP_FIXED) of `len` bytes of `fd`; nothing
        // else refers to the returned address until it is stored in the new `ShmMap`.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        Ok(ShmMap {
            fd,
            ptr: ptr.cast(),
            len,
        })
    }

    fn remap(&mut self, len: usize) -> rustix::io::Result<()> {
        // SAFETY: maps the same fd afresh; the old mapping is unmapped only after the new
        // one exists, and only through this `&mut self`, so no reference into it survives.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                self.fd.as_fd(),
                0,
            )?
        };
        // SAFETY: `self.ptr`/`self.len` describe the mapping created by `map`/`remap`,
        // unmapped exactly once here and replaced below.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.cast(), self.len);
        }
        self.ptr = ptr.cast();
        self.len = len;
        Ok(())
    }
}

impl Drop for ShmMap {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `map`/`remap` with this length and is unmapped
        // exactly once, when its last owner (pool or buffer) goes away.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// User data of a `wl_shm_pool`.
pub struct PoolData {
    map: Arc<Mutex<ShmMap>>,
}

/// User data of a `wl_buffer` made by a pool.
pub struct BufferData {
    map: Arc<Mutex<ShmMap>>,
    pub offset: usize,
    pub width: u32,
    pub height: u32,
    pub stride: usize,
    pub format: wl_shm::Format,
}

/// Why a buffer could not be written.
#[derive(Debug)]
pub enum WriteError {
    /// The file behind the pool is now smaller than the mapping (the client truncated it).
    Truncated,
}

impl BufferData {
    /// Runs `write(dst)` over the buffer's bytes (`stride * height` of them), after checking
    /// that the file still backs the whole mapping (a truncated file would raise SIGBUS).
    pub fn with_bytes<R>(&self, write: impl FnOnce(&mut [u8]) -> R) -> Result<R, WriteError> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let size = rustix::fs::fstat(&map.fd).map(|st| st.st_size).unwrap_or(0);
        let need = self.offset + self.stride * self.height as usize;
        if (size as u64) < map.len as u64 || need > map.len {
            return Err(WriteError::Truncated);
        }
        // SAFETY: `offset + stride * height <= map.len` (checked at creation and above, and a
        // pool only grows), the file covers the whole mapping (fstat above), and the mutex
        // serialises writers in this process; the client may write concurrently, which makes
        // the contents racy but never unsound for plain bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                map.ptr.add(self.offset),
                self.stride * self.height as usize,
            )
        };
        Ok(write(bytes))
    }
}

impl GlobalDispatch<wl_shm::WlShm, ()> for State {
    fn bind(
        _state: &mut State,
        _handle: &DisplayHandle,
        _client: &Client,
        resource: New<wl_shm::WlShm>,
        _global_data: &(),
        data_init: &mut DataInit<'_, State>,
    ) {
        let shm = data_init.init(resource, ());
        for format in FORMATS {
            shm.format(format);
        }
    }
}

impl Dispatch<wl_shm::WlShm, ()> for State {
    fn request(
        _state: &mut State,
        _client: &Client,
        resource: &wl_shm::WlShm,
        request: wl_shm::Request,
        _data: &(),
        _dhandle: &DisplayHandle,
        data_init: &mut DataInit<'_, State>,
    ) {
        match request {
            wl_shm::Request::CreatePool { id, fd, size } => {
                if size <= 0 {
                    resource.post_error(
                        wl_shm::Error::InvalidStride,
                        format!("invalid pool size {size}"),
                    );
                    return;
                }
                match ShmMap::map(fd, size as usize) {
                    Ok(map) => {
                        data_init.init(
                            id,
                            PoolData {
                                map: Arc::new(Mutex::new(map)),
                            },
                        );
                    }
                    Err(e) => resource.post_error(
                        wl_shm::Error::InvalidFd,
                        format!("mmap of the pool fd failed: {e}"),
                    ),
                }
            }
            wl_shm::Request::Release => {}
            _ => {}
        }
    }
}

impl Dispatch<wl_shm_pool::WlShmPool, PoolData> for State {
    fn request(
        _state: &mut State,
        _client: &Client,
        resource: &wl_shm_pool::WlShmPool,
        request: wl_shm_pool::Request,
        data: &PoolData,
        _dhandle: &DisplayHandle,
        data_init: &mut DataInit<'_, State>,
    ) {
        match request {
            wl_shm_pool::Request::CreateBuffer {
                id,
                offset,
                width,
                height,
                stride,
                format,
            } => {
                let format = match format.into_result() {
                    Ok(f) if FORMATS.contains(&f) => f,
                    other => {
                        resource.post_error(
                            wl_shm::Error::InvalidFormat,
                            format!("unsupported format {other:?}"),
                        );
                        return;
                    }
                };
                let pool_len = data.map.lock().unwrap_or_else(|e| e.into_inner()).len as i64;
                let (o, w, h, s) = (offset as i64, width as i64, height as i64, stride as i64);
                if o < 0 || w <= 0 || h <= 0 || s < w * 4 || o + s * h > pool_len {
                    resource.post_error(
                        wl_shm::Error::InvalidStride,
                        format!("invalid buffer: offset {o} {w}x{h} stride {s} in a {pool_len}-byte pool"),
                    );
                    return;
                }
                data_init.init(
                    id,
                    BufferData {
                        map: data.map.clone(),
                        offset: o as usize,
                        width: w as u32,
                        height: h as u32,
                        stride: s as usize,
                        format,
                    },
                );
            }
            wl_shm_pool::Request::Resize { size } => {
                let mut map = data.map.lock().unwrap_or_else(|e| e.into_inner());
                if size <= 0 || (size as usize) < map.len {
                    resource.post_error(
                        wl_shm::Error::InvalidStride,
                        format!("a pool cannot shrink ({} -> {size})", map.len),
                    );
                    return;
                }
                if let Err(e) = map.remap(size as usize) {
                    resource.post_error(
                        wl_shm::Error::InvalidFd,
                        format!("mremap of the pool failed: {e}"),
                    );
                }
            }
            wl_shm_pool::Request::Destroy => {}
            _ => {}
        }
    }
}

impl Dispatch<wl_buffer::WlBuffer, BufferData> for State {
    fn request(
        _state: &mut State,
        _client: &Client,
        _resource: &wl_buffer::WlBuffer,
        _request: wl_buffer::Request,
        _data: &BufferData,
        _dhandle: &DisplayHandle,
        _data_init: &mut DataInit<'_, State>,
    ) {
        // Only `destroy`: the user data (and with it the mapping) goes when the object does.
    }
}

/// The buffer data of a live `wl_buffer` created by this module's pools.
pub fn buffer_data(buffer: &wl_buffer::WlBuffer) -> Option<&BufferData> {
    if !buffer.is_alive() {
        return None;
    }
    buffer.data::<BufferData>()
}
