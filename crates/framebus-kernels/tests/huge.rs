//! Huge images convert in row bands written straight into the destination:
//! an 8000×6000 RGBA16 → RGBA (and → NV12) conversion allocates only small
//! per-band scratch rows, never a second full-size image. A counting global
//! allocator measures the peak heap growth during the call.

use framebus_core::PixelFormat;
use framebus_kernels::{convert, ImageMut, ImageRef, Options};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only adds counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Ordering::SeqCst) + l.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn rgba16_8000x6000_converts_without_a_full_size_temporary() {
    let (w, h) = (8000, 6000);
    let mut src = vec![0u8; w * h * 8];
    for (i, px) in src.chunks_exact_mut(8).enumerate().step_by(997) {
        px.copy_from_slice(&[(i % 251) as u8, 0x80, 0xff, 0xff, 0, 0, 0xff, 0xff]);
    }
    let sv = ImageRef::from_parts(&src, w, h, PixelFormat::Rgba16, None).unwrap();
    for (d, dlen) in [
        (PixelFormat::Rgba, w * h * 4),
        (PixelFormat::Nv12, w * h * 3 / 2),
    ] {
        let mut dst = vec![0u8; dlen];
        let before = LIVE.load(Ordering::SeqCst);
        PEAK.store(before, Ordering::SeqCst);
        let mut dv = ImageMut::from_parts(&mut dst, w, h, d, None).unwrap();
        convert(&sv, &mut dv, &Options::default()).unwrap();
        let extra = PEAK.load(Ordering::SeqCst) - before;
        // Band scratch is a few rows (≤ 64 KiB each) a thread; a full-size
        // temporary would be ≥ 48 MB.
        assert!(extra < 8 << 20, "{d}: peak extra heap {extra} bytes");
        // Spot-check pixels: (v + 128) / 257 of the 16-bit samples.
        if d == PixelFormat::Rgba {
            // pixel i = R (i % 251) + 0x8000, G 0xffff, B 0, A 0xffff
            let i = 997 * 5;
            let r = (i % 251) as u32 + 0x8000;
            assert_eq!(
                &dst[4 * i..4 * i + 4],
                &[((r + 128) / 257) as u8, 255, 0, 255]
            );
        }
    }
}
