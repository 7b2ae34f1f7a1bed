//! DLPack export of frames (the C structs of dlpack.h, v1.0, and both capsule kinds).
//!
//! Ownership: one heap block (`Export*`) holds the managed tensor, its shape and
//! strides arrays and a `Lease`. The capsule destructor frees it only while the
//! capsule still carries its original name, i.e. was never consumed; a consumer
//! renames it to `used_dltensor[_versioned]` and calls `deleter` itself. The
//! deleter only drops a lease, which never needs the GIL, so consumers may call
//! it from any thread.

use framebus_core::Frame;
use pyo3::ffi;
use pyo3::prelude::*;
use std::ffi::{c_void, CStr};

pub const KDL_CPU: i32 = 1;
const KDL_UINT: u8 = 1;
const FLAG_READ_ONLY: u64 = 1 << 0;
const FLAG_IS_COPIED: u64 = 1 << 1;

const NAME_LEGACY: &CStr = c"dltensor";
const NAME_VERSIONED: &CStr = c"dltensor_versioned";

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

#[repr(C)]
struct DLPackVersion {
    major: u32,
    minor: u32,
}

#[repr(C)]
struct DLManagedTensorVersioned {
    version: DLPackVersion,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    flags: u64,
    dl_tensor: DLTensor,
}

/// Everything one legacy export owns. `managed` must stay the first field so a
/// `*mut DLManagedTensor` is also a `*mut ExportLegacy`.
#[repr(C)]
struct ExportLegacy {
    managed: DLManagedTensor,
    shape: [i64; 3],
    strides: [i64; 3],
    _frame: Frame,
}

/// Everything one versioned export owns (`managed` first, as above).
#[repr(C)]
struct ExportVersioned {
    managed: DLManagedTensorVersioned,
    shape: [i64; 3],
    strides: [i64; 3],
    _frame: Frame,
}

unsafe extern "C" fn delete_legacy(m: *mut DLManagedTensor) {
    if !m.is_null() {
        // SAFETY: `m` is the first field of a Box<ExportLegacy> leaked in
        // `export` (repr(C), so the addresses are equal); DLPack calls the
        // deleter once.
        drop(unsafe { Box::from_raw(m.cast::<ExportLegacy>()) });
    }
}

unsafe extern "C" fn delete_versioned(m: *mut DLManagedTensorVersioned) {
    if !m.is_null() {
        // SAFETY: as in delete_legacy, for ExportVersioned.
        drop(unsafe { Box::from_raw(m.cast::<ExportVersioned>()) });
    }
}

unsafe extern "C" fn capsule_destructor_legacy(capsule: *mut ffi::PyObject) {
    // SAFETY: CPython calls this with the capsule being destroyed. If it still
    // has its original name nobody consumed it, so we own the tensor and run its
    // deleter; a consumed capsule was renamed and is the consumer's business.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, NAME_LEGACY.as_ptr()) == 1 {
            let m =
                ffi::PyCapsule_GetPointer(capsule, NAME_LEGACY.as_ptr()) as *mut DLManagedTensor;
            if let Some(d) = m.as_ref().and_then(|m| m.deleter) {
                d(m);
            }
        }
    }
}

unsafe extern "C" fn capsule_destructor_versioned(capsule: *mut ffi::PyObject) {
    // SAFETY: as in capsule_destructor_legacy, for the versioned name.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, NAME_VERSIONED.as_ptr()) == 1 {
            let m = ffi::PyCapsule_GetPointer(capsule, NAME_VERSIONED.as_ptr())
                as *mut DLManagedTensorVersioned;
            if let Some(d) = m.as_ref().and_then(|m| m.deleter) {
                d(m);
            }
        }
    }
}

fn tensor(frame: &Frame) -> (DLTensor, [i64; 3], [i64; 3]) {
    let l = frame.layout();
    let item = l.format.sample_bytes();
    let mut shape = [0i64; 3];
    let mut strides = [0i64; 3];
    let dims = l.shape();
    for (i, (s, st)) in dims.iter().zip(l.byte_strides()).enumerate() {
        shape[i] = *s as i64;
        strides[i] = (st / item) as i64; // DLPack strides count elements
    }
    let t = DLTensor {
        data: frame.as_ptr().cast(),
        device: DLDevice {
            device_type: KDL_CPU,
            device_id: 0,
        },
        ndim: dims.len() as i32,
        dtype: DLDataType {
            code: KDL_UINT,
            bits: (item * 8) as u8,
            lanes: 1,
        },
        shape: std::ptr::null_mut(),
        strides: std::ptr::null_mut(),
        byte_offset: 0,
    };
    (t, shape, strides)
}

/// Build a DLPack capsule that owns `frame` (and so its lease).
pub fn export<'py>(
    py: Python<'py>,
    frame: Frame,
    versioned: bool,
    readonly: bool,
    copied: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let (t, shape, strides) = tensor(&frame);
    let (ptr, name, destructor): (*mut c_void, &CStr, ffi::PyCapsule_Destructor) = if versioned {
        let mut flags = 0;
        if readonly {
            flags |= FLAG_READ_ONLY;
        }
        if copied {
            flags |= FLAG_IS_COPIED;
        }
        let mut b = Box::new(ExportVersioned {
            managed: DLManagedTensorVersioned {
                version: DLPackVersion { major: 1, minor: 0 },
                manager_ctx: std::ptr::null_mut(),
                deleter: Some(delete_versioned),
                flags,
                dl_tensor: t,
            },
            shape,
            strides,
            _frame: frame,
        });
        b.managed.dl_tensor.shape = b.shape.as_mut_ptr();
        b.managed.dl_tensor.strides = b.strides.as_mut_ptr();
        let raw = Box::into_raw(b);
        // SAFETY: raw is a live allocation we just leaked.
        unsafe { (*raw).managed.manager_ctx = raw.cast() };
        (raw.cast(), NAME_VERSIONED, capsule_destructor_versioned)
    } else {
        let mut b = Box::new(ExportLegacy {
            managed: DLManagedTensor {
                dl_tensor: t,
                manager_ctx: std::ptr::null_mut(),
                deleter: Some(delete_legacy),
            },
            shape,
            strides,
            _frame: frame,
        });
        b.managed.dl_tensor.shape = b.shape.as_mut_ptr();
        b.managed.dl_tensor.strides = b.strides.as_mut_ptr();
        let raw = Box::into_raw(b);
        // SAFETY: raw is a live allocation we just leaked.
        unsafe { (*raw).managed.manager_ctx = raw.cast() };
        (raw.cast(), NAME_LEGACY, capsule_destructor_legacy)
    };
    // SAFETY: `ptr` is a valid managed tensor, `name` is 'static, and the
    // destructor matches the name. If capsule creation fails we still own the
    // tensor and must free it ourselves (STYLE.md item 12).
    unsafe {
        let cap = ffi::PyCapsule_New(ptr, name.as_ptr(), Some(destructor));
        if cap.is_null() {
            if versioned {
                delete_versioned(ptr.cast());
            } else {
                delete_legacy(ptr.cast());
            }
            return Err(PyErr::fetch(py));
        }
        Ok(Bound::from_owned_ptr(py, cap))
    }
}
