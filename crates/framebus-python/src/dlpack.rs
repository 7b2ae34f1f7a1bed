//! DLPack export of frames (the C structs of dlpack.h, v1.0, and both capsule kinds),
//! host frames ([`export`]) and device frames ([`export_device`], `framebus.cuda`).
//!
//! Ownership: one heap block (`Export*`) holds the managed tensor, its shape and
//! strides arrays and its owner (a `Frame`, so a `Lease`; for a device frame an
//! export guard of the device buffer). The capsule destructor frees it only while the
//! capsule still carries its original name, i.e. was never consumed; a consumer
//! renames it to `used_dltensor[_versioned]` and calls `deleter` itself. The
//! deleter only drops a lease, which never needs the GIL, so consumers may call
//! it from any thread.

use framebus_core::Frame;
use pyo3::ffi;
use pyo3::prelude::*;
use std::ffi::{c_void, CStr};

pub const KDL_CPU: i32 = 1;
pub const KDL_CUDA: i32 = 2;

/// The DLPack `dl_device=` argument of an export from `here` (`(type, id)`):
/// absent, or `here` itself (framebus exports never move memory between devices).
pub fn check_dl_device(dl_device: Option<(i32, i32)>, here: (i32, i32)) -> PyResult<()> {
    match dl_device {
        Some(dev) if dev != here => Err(pyo3::exceptions::PyBufferError::new_err(format!(
            "dl_device={dev:?} is not supported: this frame lives on {here:?} ({})",
            if here.0 == KDL_CPU {
                "the CPU"
            } else {
                "a CUDA device"
            }
        ))),
        _ => Ok(()),
    }
}
const KDL_UINT: u8 = 1;
const KDL_FLOAT: u8 = 2;
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

/// The two managed-tensor structs (legacy and versioned) seen alike: the
/// capsule name that marks an unconsumed capsule, the tensor and the deleter.
trait Managed: Sized + 'static {
    const NAME: &'static CStr;
    fn tensor_mut(&mut self) -> &mut DLTensor;
    fn set_manager(&mut self, ctx: *mut c_void, deleter: unsafe extern "C" fn(*mut Self));
    fn deleter(&self) -> Option<unsafe extern "C" fn(*mut Self)>;
}

impl Managed for DLManagedTensor {
    const NAME: &'static CStr = NAME_LEGACY;
    fn tensor_mut(&mut self) -> &mut DLTensor {
        &mut self.dl_tensor
    }
    fn set_manager(&mut self, ctx: *mut c_void, deleter: unsafe extern "C" fn(*mut Self)) {
        self.manager_ctx = ctx;
        self.deleter = Some(deleter);
    }
    fn deleter(&self) -> Option<unsafe extern "C" fn(*mut Self)> {
        self.deleter
    }
}

impl Managed for DLManagedTensorVersioned {
    const NAME: &'static CStr = NAME_VERSIONED;
    fn tensor_mut(&mut self) -> &mut DLTensor {
        &mut self.dl_tensor
    }
    fn set_manager(&mut self, ctx: *mut c_void, deleter: unsafe extern "C" fn(*mut Self)) {
        self.manager_ctx = ctx;
        self.deleter = Some(deleter);
    }
    fn deleter(&self) -> Option<unsafe extern "C" fn(*mut Self)> {
        self.deleter
    }
}

/// Everything one export owns. `managed` must stay the first field so a
/// `*mut M` handed to the consumer is also a `*mut Export<M>`.
#[repr(C)]
struct Export<M> {
    managed: M,
    shape: [i64; 3],
    strides: [i64; 3],
    _owner: Box<dyn Send>,
}

/// The deleter DLPack consumers call (once) when they are done with the tensor.
unsafe extern "C" fn delete<M: Managed>(m: *mut M) {
    if !m.is_null() {
        // SAFETY: `m` is the first field of a Box<Export<M>> leaked in `export`
        // (repr(C), so the addresses are equal); DLPack calls the deleter once.
        drop(unsafe { Box::from_raw(m.cast::<Export<M>>()) });
    }
}

/// The capsule destructor: frees the tensor only if nobody consumed it.
unsafe extern "C" fn capsule_destructor<M: Managed>(capsule: *mut ffi::PyObject) {
    // SAFETY: CPython calls this with the capsule being destroyed. If it still
    // has its original name nobody consumed it, so we own the tensor and run its
    // deleter; a consumed capsule was renamed and is the consumer's business.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, M::NAME.as_ptr()) == 1 {
            let m = ffi::PyCapsule_GetPointer(capsule, M::NAME.as_ptr()) as *mut M;
            if let Some(d) = m.as_ref().and_then(Managed::deleter) {
                d(m);
            }
        }
    }
}

/// Box the export, point the tensor at its own shape/strides, and wrap it in
/// a capsule that owns it until a consumer takes it.
fn capsule<'py, M: Managed>(
    py: Python<'py>,
    managed: M,
    shape: [i64; 3],
    strides: [i64; 3],
    owner: Box<dyn Send>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut b = Box::new(Export {
        managed,
        shape,
        strides,
        _owner: owner,
    });
    let (sp, st) = (b.shape.as_mut_ptr(), b.strides.as_mut_ptr());
    let t = b.managed.tensor_mut();
    t.shape = sp;
    t.strides = st;
    let raw = Box::into_raw(b);
    // SAFETY: raw is a live allocation we just leaked; nothing else refers to it.
    unsafe { (*raw).managed.set_manager(raw.cast(), delete::<M>) };
    // SAFETY: `raw` is a valid managed tensor, the name is 'static and matches
    // the destructor. If capsule creation fails we still own the tensor and
    // must free it ourselves (STYLE.md item 12).
    unsafe {
        let cap = ffi::PyCapsule_New(raw.cast(), M::NAME.as_ptr(), Some(capsule_destructor::<M>));
        if cap.is_null() {
            delete::<M>(raw.cast());
            return Err(PyErr::fetch(py));
        }
        Ok(Bound::from_owned_ptr(py, cap))
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
    wrap(
        py,
        t,
        shape,
        strides,
        Box::new(frame),
        versioned,
        readonly,
        copied,
    )
}

/// A device tensor for [`export_device`]: pointer, device, shape and strides
/// in elements (at most 3 dimensions), element type.
pub struct DeviceTensor {
    pub data: u64,
    pub device_type: i32,
    pub device_id: i32,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub float: bool,
    pub bits: u8,
}

/// Build a DLPack capsule of a device tensor that owns `owner` (dropped by
/// the consumer's deleter, on any thread, without the GIL).
pub fn export_device<'py>(
    py: Python<'py>,
    d: DeviceTensor,
    owner: Box<dyn Send>,
    versioned: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let mut shape = [0i64; 3];
    let mut strides = [0i64; 3];
    for (i, (s, st)) in d.shape.iter().zip(&d.strides).take(3).enumerate() {
        shape[i] = *s as i64;
        strides[i] = *st as i64;
    }
    let t = DLTensor {
        data: d.data as usize as *mut c_void,
        device: DLDevice {
            device_type: d.device_type,
            device_id: d.device_id,
        },
        ndim: d.shape.len().min(3) as i32,
        dtype: DLDataType {
            code: if d.float { KDL_FLOAT } else { KDL_UINT },
            bits: d.bits,
            lanes: 1,
        },
        shape: std::ptr::null_mut(),
        strides: std::ptr::null_mut(),
        byte_offset: 0,
    };
    wrap(py, t, shape, strides, owner, versioned, false, false)
}

#[allow(clippy::too_many_arguments)]
fn wrap<'py>(
    py: Python<'py>,
    t: DLTensor,
    shape: [i64; 3],
    strides: [i64; 3],
    owner: Box<dyn Send>,
    versioned: bool,
    readonly: bool,
    copied: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if versioned {
        let mut flags = 0;
        if readonly {
            flags |= FLAG_READ_ONLY;
        }
        if copied {
            flags |= FLAG_IS_COPIED;
        }
        let managed = DLManagedTensorVersioned {
            version: DLPackVersion { major: 1, minor: 0 },
            manager_ctx: std::ptr::null_mut(),
            deleter: None,
            flags,
            dl_tensor: t,
        };
        capsule(py, managed, shape, strides, owner)
    } else {
        let managed = DLManagedTensor {
            dl_tensor: t,
            manager_ctx: std::ptr::null_mut(),
            deleter: None,
        };
        capsule(py, managed, shape, strides, owner)
    }
}
