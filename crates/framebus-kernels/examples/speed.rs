//! Quick per-level timing of the main conversions on one 4K BGRA frame:
//! `cargo run --release -p framebus-kernels --example speed [threads]`.
//! (The real benchmark, against OpenCV and NumPy, is bench/bench_kernels.py.)

use framebus_core::{FrameLayout, PixelFormat};
use framebus_kernels::{convert, resize, ImageMut, ImageRef, Method, Options, Simd};
use std::time::Instant;

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
    if let Ok(spec) = std::env::var("RESIZE_ONLY") {
        // e.g. RESIZE_ONLY=1280x720: time the general resize path alone
        let (ow, oh) = spec
            .split_once('x')
            .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()))
            .unwrap();
        let lay = FrameLayout::new(ow, oh, PixelFormat::Bgra, None).unwrap();
        for m in [Method::Area, Method::Bilinear] {
            let opts = Options {
                threads,
                ..Default::default()
            };
            let mut best = f64::MAX;
            for _ in 0..9 {
                let t = Instant::now();
                resize(
                    &sv,
                    &mut ImageMut::new(&mut out[..lay.byte_len()], lay).unwrap(),
                    m,
                    &opts,
                )
                .unwrap();
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!("resize {w}x{h} -> {ow}x{oh} {m:?}: {:.2} ms", best * 1e3);
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
            let mut best = f64::MAX;
            for _ in 0..7 {
                let t = Instant::now();
                convert(
                    &sv,
                    &mut ImageMut::new(&mut out[..lay.byte_len()], lay).unwrap(),
                    &opts,
                )
                .unwrap();
                best = best.min(t.elapsed().as_secs_f64());
            }
            let gbs = (w * h * 4 + lay.byte_len()) as f64 / best / 1e9;
            println!(
                "{level:7} BGRA->{d:6} {:7.2} ms  {gbs:6.2} GB/s (read+write)",
                best * 1e3
            );
        }
        let lay = FrameLayout::new(1920, 1080, PixelFormat::Rgb, None).unwrap();
        for m in [Method::Area, Method::Bilinear] {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                resize(
                    &sv,
                    &mut ImageMut::new(&mut out[..lay.byte_len()], lay).unwrap(),
                    m,
                    &opts,
                )
                .unwrap();
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "{level:7} resize 4K BGRA -> 1080p RGB {m:?}: {:7.2} ms",
                best * 1e3
            );
        }
    }
}
