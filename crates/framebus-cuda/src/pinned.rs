//! Pinned pool slots: a [`framebus_core::SlotHook`] that registers each slot
//! of a `FramePool` with `cuMemHostRegister` (portable: pinned for every
//! context) once, when the slot is mapped, and unregisters it before the slot
//! is unmapped. Registration costs up to hundreds of ms per range, so it is
//! paid once per slot, never per frame; a slot lives for many frames.
//!
//! Read-only mappings (the slots a channel subscriber maps from its publisher)
//! are registered with `CU_MEMHOSTREGISTER_READ_ONLY` (CUDA 11.1+): the GPU
//! may read them, never write.
//!
//! A registration that fails (the driver refused, the locked-memory limit)
//! leaves the slot pageable: it still works, at pageable speed, and the
//! failure is counted in [`PinStats`] with the driver's message.

use crate::device::Device;
use crate::driver::{self, check};
use crate::error::Result;
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Every range this process pinned through a [`PinHook`]: start → length.
static PINNED: Mutex<BTreeMap<usize, usize>> = Mutex::new(BTreeMap::new());

/// True when `[ptr, ptr + len)` lies inside one range pinned by a [`PinHook`].
pub fn is_pinned(ptr: *const u8, len: usize) -> bool {
    let p = ptr as usize;
    let map = PINNED.lock().unwrap_or_else(|e| e.into_inner());
    map.range(..=p)
        .next_back()
        .is_some_and(|(s, l)| p + len <= s + l)
}

/// What a [`PinHook`] did so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinStats {
    pub device: usize,
    pub pinned_slots: usize,
    pub pinned_bytes: usize,
    /// Total time spent in `cuMemHostRegister`, ns.
    pub register_ns: u64,
    pub registrations: u64,
    pub unregistrations: u64,
    pub failures: u64,
    /// The driver's message for the last failure.
    pub last_error: Option<String>,
}

/// Registers slots with the driver (see the module doc).
pub struct PinHook {
    device: Arc<Device>,
    slots: AtomicUsize,
    bytes: AtomicUsize,
    register_ns: AtomicU64,
    registrations: AtomicU64,
    unregistrations: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl PinHook {
    pub fn new(device: Arc<Device>) -> Arc<PinHook> {
        Arc::new(PinHook {
            device,
            slots: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            register_ns: AtomicU64::new(0),
            registrations: AtomicU64::new(0),
            unregistrations: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    pub fn stats(&self) -> PinStats {
        PinStats {
            device: self.device.index,
            pinned_slots: self.slots.load(Relaxed),
            pinned_bytes: self.bytes.load(Relaxed),
            register_ns: self.register_ns.load(Relaxed),
            registrations: self.registrations.load(Relaxed),
            unregistrations: self.unregistrations.load(Relaxed),
            failures: self.failures.load(Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn register(&self, ptr: NonNull<u8>, len: usize, writable: bool) -> Result<()> {
        let api = self.device.bind()?;
        let flags = if writable {
            driver::CU_MEMHOSTREGISTER_PORTABLE
        } else {
            driver::CU_MEMHOSTREGISTER_PORTABLE | driver::CU_MEMHOSTREGISTER_READ_ONLY
        };
        let t = Instant::now();
        // SAFETY: `ptr..ptr+len` is a live page-aligned mapping just made; it
        // stays mapped until `on_unmap`, which unregisters it first.
        let r = unsafe { (api.mem_host_register)(ptr.as_ptr().cast(), len, flags) };
        self.register_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Relaxed);
        check(api, "cuMemHostRegister", r, || format!("{len} bytes"))
    }
}

impl framebus_core::SlotHook for PinHook {
    fn stats(&self) -> Vec<(&'static str, u64)> {
        let s = PinHook::stats(self);
        vec![
            ("pinned_device", s.device as u64),
            ("pinned_slots", s.pinned_slots as u64),
            ("pinned_bytes", s.pinned_bytes as u64),
            ("pin_register_ns", s.register_ns),
            ("pin_registrations", s.registrations),
            ("pin_unregistrations", s.unregistrations),
            ("pin_failures", s.failures),
        ]
    }

    fn on_map(&self, slot: &framebus_core::Slot) {
        let (Some(ptr), len) = (NonNull::new(slot.as_ptr()), slot.capacity()) else {
            return;
        };
        match self.register(ptr, len, slot.is_writable()) {
            Ok(()) => {
                PINNED
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(ptr.as_ptr() as usize, len);
                self.slots.fetch_add(1, Relaxed);
                self.bytes.fetch_add(len, Relaxed);
                self.registrations.fetch_add(1, Relaxed);
            }
            Err(e) => {
                self.failures.fetch_add(1, Relaxed);
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
            }
        }
    }

    fn on_unmap(&self, slot: &framebus_core::Slot) {
        let (ptr, len) = (slot.as_ptr(), slot.capacity());
        let was = PINNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(ptr as usize));
        if was.is_none() {
            return; // its registration had failed
        }
        if let Ok(api) = self.device.bind() {
            // SAFETY: we registered exactly this pointer in `on_map`; the
            // mapping is still there (on_unmap runs before munmap) and no
            // lease is left, so no copy can be reading it (an upload holds its
            // lease until the copy's event completed).
            unsafe { (api.mem_host_unregister)(ptr.cast()) };
        }
        self.slots.fetch_sub(1, Relaxed);
        self.bytes.fetch_sub(len, Relaxed);
        self.unregistrations.fetch_add(1, Relaxed);
    }
}
