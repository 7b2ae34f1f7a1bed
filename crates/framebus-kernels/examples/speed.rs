//! Quick per-level timing of the main conversions and resizes on one BGRA frame:
//! `cargo run --release -p framebus-kernels --example speed [threads]`
//! (`RES=1080p` for 1920×1080 instead of 4K; `RESIZE_ONLY=WxH` to time only the
//! general resize to that size). The real benchmark, against OpenCV, NumPy and
//! Pillow, is bench/bench_kernels.py.

use framebus_core::{FrameLayout, PixelFormat};
use framebus_kernels::{convert, resize, ImageMut, ImageRef, Method, Options, Simd};
use std::time::Instant;

/// Best wall time of `n` runs of `f`, in seconds.
fn best_of(n: usize, mut f: impl FnMut()) -> f64 {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let threads = std::env::args().nth(1).map(|s| s.parse().expect("threads"));
    let (w, h) = match std::env::var("RES").as_deref() {
        Ok("1080p") => (1920, 1080),
        _ => (3840, 2160),
    };
    let src: Vec<u8> = (0..w * h * 4).map(|i| (i * 7 + i / 4099) as u8).collect();
    let sv = ImageRef::from_parts(&src, w, h, PixelFormat::Bgra, None).unwrap();
    // 64-byte aligned, as pool slots (page-aligned) are: streaming stores need it.
    let mut buf = vec![0u8; w * h * 4 + 64];
    let off = buf.as_ptr().align_offset(64);
    let out = &mut buf[off..off + w * h * 4];
    let run_resize = |out: &mut [u8], lay: FrameLayout, m: Method, opts: &Options| {
        let mut dv = ImageMut::new(&mut out[..lay.byte_len()], lay).unwrap();
        resize(&sv, &mut dv, m, opts).unwrap();
    };

    if let Ok(size) = std::env::var("RESIZE_ONLY") {
        let (ow, oh) = size.split_once('x').expect("RESIZE_ONLY=WxH");
        let (ow, oh) = (ow.parse().unwrap(), oh.parse().unwrap());
        let lay = FrameLayout::new(ow, oh, PixelFormat::Bgra, None).unwrap();
        let opts = Options {
            threads,
            ..Default::default()
        };
        for m in [Method::Area, Method::Bilinear] {
            let t = best_of(9, || run_resize(out, lay, m, &opts));
            println!("resize {w}x{h} -> {ow}x{oh} {m:?}: {:.2} ms", t * 1e3);
        }
        return;
    }
    for level in Simd::available() {
        let opts = Options {
            simd: Some(level),
            threads,
            ..Default::default()
        };
        for d in [
            PixelFormat::Bgra,
            PixelFormat::Rgba,
            PixelFormat::Rgb,
            PixelFormat::Gray8,
            PixelFormat::Nv12,
            PixelFormat::I420,
        ] {
            let lay = FrameLayout::new(w, h, d, None).unwrap();
            let t = best_of(7, || {
                let mut dv = ImageMut::new(&mut out[..lay.byte_len()], lay).unwrap();
                convert(&sv, &mut dv, &opts).unwrap();
            });
            let gbs = (w * h * 4 + lay.byte_len()) as f64 / t / 1e9;
            println!(
                "{level:7} BGRA->{d:6} {:7.2} ms  {gbs:6.2} GB/s (read+write)",
                t * 1e3
            );
        }
        let lay = FrameLayout::new(w / 2, h / 2, PixelFormat::Rgb, None).unwrap();
        for m in [Method::Area, Method::Bilinear] {
            let t = best_of(5, || run_resize(out, lay, m, &opts));
            println!("{level:7} resize /2 BGRA -> RGB {m:?}: {:7.2} ms", t * 1e3);
        }
    }
}
