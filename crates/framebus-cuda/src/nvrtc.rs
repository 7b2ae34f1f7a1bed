//! NVRTC, loaded at run time, to compile framebus's kernels to PTX.
//!
//! The library is `$FRAMEBUS_CUDA_NVRTC` when set, else the first of
//! `libnvrtc.so.13`, `libnvrtc.so.12`, `libnvrtc.so` that loads (the pip
//! wheel `nvidia-cuda-nvrtc-cu12` ships `libnvrtc.so.12`; the Python package
//! adds its directory to the search when it is installed). NVRTC needs no GPU:
//! the kernels compile on any machine that has it (tests/test_cuda_nvrtc.py).

use crate::error::{CudaError, Result, Unavailable};
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::OnceLock;

type NvrtcResult = c_int;
type Program = *mut c_void;

/// The environment variable that names the NVRTC library to load.
pub const NVRTC_ENV: &str = "FRAMEBUS_CUDA_NVRTC";

struct Nvrtc {
    version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> NvrtcResult,
    create: unsafe extern "C" fn(
        *mut Program,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> NvrtcResult,
    compile: unsafe extern "C" fn(Program, c_int, *const *const c_char) -> NvrtcResult,
    ptx_size: unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult,
    ptx: unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult,
    log_size: unsafe extern "C" fn(Program, *mut usize) -> NvrtcResult,
    log: unsafe extern "C" fn(Program, *mut c_char) -> NvrtcResult,
    destroy: unsafe extern "C" fn(*mut Program) -> NvrtcResult,
    path: String,
    _lib: libloading::Library,
}

fn candidates() -> Vec<String> {
    if let Some(p) = std::env::var(NVRTC_ENV)
        .ok()
        .filter(|p| !p.trim().is_empty())
    {
        return vec![p];
    }
    ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn load(path: &str) -> std::result::Result<Nvrtc, String> {
    // SAFETY: loading NVRTC runs its initialisers, which is how it is used.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| format!("{path}: {e}"))?;
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the symbol has this signature in nvrtc.h; the pointer
            // stays valid while `_lib` (kept in the struct) lives.
            unsafe {
                *lib.get(concat!($name, "\0").as_bytes())
                    .map_err(|_| format!("{path} lacks {}", $name))?
            }
        };
    }
    Ok(Nvrtc {
        version: sym!("nvrtcVersion"),
        create: sym!("nvrtcCreateProgram"),
        compile: sym!("nvrtcCompileProgram"),
        ptx_size: sym!("nvrtcGetPTXSize"),
        ptx: sym!("nvrtcGetPTX"),
        log_size: sym!("nvrtcGetProgramLogSize"),
        log: sym!("nvrtcGetProgramLog"),
        destroy: sym!("nvrtcDestroyProgram"),
        path: path.to_owned(),
        _lib: lib,
    })
}

fn nvrtc() -> Result<&'static Nvrtc> {
    static N: OnceLock<std::result::Result<Nvrtc, String>> = OnceLock::new();
    N.get_or_init(|| {
        let mut why = Vec::new();
        for c in candidates() {
            match load(&c) {
                Ok(n) => return Ok(n),
                Err(e) => why.push(e),
            }
        }
        Err(why.join("; "))
    })
    .as_ref()
    .map_err(|e| Unavailable::NoNvrtc(e.clone()).into())
}

/// NVRTC's path and version (major, minor), or why it is unavailable.
pub fn version() -> Result<(String, (i32, i32))> {
    let n = nvrtc()?;
    let (mut a, mut b) = (0, 0);
    // SAFETY: out-pointers are live locals.
    unsafe { (n.version)(&mut a, &mut b) };
    Ok((n.path.clone(), (a, b)))
}

/// Compile `source` for `arch` (`"compute_75"`, `"sm_86"`, ...) to PTX (NUL-terminated).
pub fn compile(source: &str, name: &str, arch: &str) -> Result<Vec<u8>> {
    let n = nvrtc()?;
    let src = CString::new(source)
        .map_err(|_| CudaError::invalid("source", "<kernel>", "contains NUL"))?;
    let cname = CString::new(name).map_err(|_| CudaError::invalid("name", name, "contains NUL"))?;
    if arch.contains('\0') {
        return Err(CudaError::invalid(
            "arch",
            format!("{arch:?}"),
            "contains NUL",
        ));
    }
    let mut prog: Program = std::ptr::null_mut();
    // SAFETY: the strings are NUL-terminated and live across the call; no headers.
    let r = unsafe {
        (n.create)(
            &mut prog,
            src.as_ptr(),
            cname.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(CudaError::Compile {
            arch: arch.into(),
            log: format!("nvrtcCreateProgram failed ({r})"),
        });
    }
    let opts: Vec<CString> = [
        format!("--gpu-architecture={arch}"),
        "--fmad=false".into(),
        "--prec-div=true".into(),
    ]
    .into_iter()
    .map(CString::new)
    .collect::<std::result::Result<_, _>>()
    .map_err(|_| CudaError::invalid("arch", format!("{arch:?}"), "contains NUL"))?;
    let ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: `prog` is a live program; the options outlive the call.
    let r = unsafe { (n.compile)(prog, ptrs.len() as c_int, ptrs.as_ptr()) };
    let out = if r != 0 {
        let mut len = 0usize;
        // SAFETY: `prog` is live; the buffer is as long as NVRTC says.
        let log = unsafe {
            (n.log_size)(prog, &mut len);
            let mut buf = vec![0u8; len.max(1)];
            (n.log)(prog, buf.as_mut_ptr().cast());
            String::from_utf8_lossy(&buf)
                .trim_end_matches('\0')
                .trim()
                .to_owned()
        };
        Err(CudaError::Compile {
            arch: arch.into(),
            log: if log.is_empty() {
                format!("nvrtcCompileProgram failed ({r})")
            } else {
                log
            },
        })
    } else {
        let mut len = 0usize;
        // SAFETY: `prog` is live and compiled; the buffer is as long as NVRTC says.
        unsafe {
            (n.ptx_size)(prog, &mut len);
            let mut buf = vec![0u8; len.max(1)];
            (n.ptx)(prog, buf.as_mut_ptr().cast());
            Ok(buf)
        }
    };
    // SAFETY: `prog` is live and destroyed once.
    unsafe { (n.destroy)(&mut prog) };
    out
}
