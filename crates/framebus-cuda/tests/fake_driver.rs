//! framebus-cuda against the fake driver (`fake/fake_cuda.c`, compiled here
//! with `cc`): the orchestration, not CUDA. Skipped (passes with a note) when
//! no C compiler is found.

use framebus_core::{FramePool, PixelFormat, PoolConfig};
use framebus_cuda::{DeviceFormat, DevicePool, DevicePoolConfig, Upload};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn fake() -> Option<&'static PathBuf> {
    static LIB: OnceLock<Option<PathBuf>> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fake_cuda");
        std::fs::create_dir_all(&dir).ok()?;
        let out = dir.join("libfake_cuda.so");
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fake/fake_cuda.c");
        let ok = Command::new("cc")
            .args(["-O2", "-shared", "-fPIC", "-pthread", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
        std::env::set_var("FRAMEBUS_CUDA_DRIVER", &out);
        std::env::set_var("FRAMEBUS_CUDA_NVRTC", &out);
        Some(out)
    })
    .as_ref()
}

#[test]
fn pinned_pool_upload_convert_download() {
    if fake().is_none() {
        eprintln!("no C compiler: skipped");
        return;
    }
    assert!(
        framebus_cuda::is_available(),
        "{:?}",
        framebus_cuda::unavailable_reason()
    );
    assert_eq!(framebus_cuda::device_count().unwrap(), 1);
    let dev = framebus_cuda::device(0).unwrap();
    let hook = framebus_cuda::PinHook::new(dev.clone());
    let host = FramePool::with_hook(PoolConfig::default(), hook.clone());
    let mut f = host.acquire_frame(5, 3, PixelFormat::Bgra, None).unwrap();
    for (i, b) in f.data_mut().unwrap().iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    assert_eq!(hook.stats().pinned_slots, 1);
    assert!(framebus_cuda::is_pinned(f.as_ptr(), f.byte_len()));
    let dpool = DevicePool::new(
        dev.clone(),
        DevicePoolConfig {
            max_bytes: None,
            on_exhausted: framebus_core::Exhausted::Error,
        },
    );
    let opts = Upload {
        format: Some(DeviceFormat::parse("RGB").unwrap()),
        ..Upload::default()
    };
    let c = framebus_cuda::upload(&f, &dpool, &opts).unwrap();
    assert_eq!((c.width, c.height, c.pitch), (5, 3, 15));
    let d = c.download(&host).unwrap();
    while !d.wait(Duration::from_millis(100)).unwrap() {}
    let back = d.into_frame();
    // SAFETY: the download completed; nobody writes the frame.
    let (src, got) = unsafe { (f.data(), back.data()) };
    for p in 0..15 {
        assert_eq!(
            &got[3 * p..3 * p + 3],
            &[src[4 * p + 2], src[4 * p + 1], src[4 * p]]
        );
    }
    drop((f, back, c));
    // The upload's host slot is let go by a background thread once its copy
    // event completed: trim until that thread has given it back.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while {
        host.trim();
        hook.stats().pinned_slots != 0
    } && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(hook.stats().pinned_slots, 0);
    let _ = Arc::strong_count(&hook);
}
