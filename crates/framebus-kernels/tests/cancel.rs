//! Cancellation: `resize_cancellable` / `convert_cancellable` /
//! `to_tensor_cancellable` stop soon after their flag is set from another
//! thread, and give exactly the plain entry points' bytes when it is not.

mod common;

use common::image;
use framebus_core::PixelFormat;
use framebus_kernels::{
    convert, convert_cancellable, resize, resize_cancellable, to_tensor, to_tensor_cancellable,
    ImageMut, ImageRef, KernelError, Method, Options, TensorSpec,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

fn opts(threads: usize) -> Options {
    Options {
        threads: Some(threads),
        ..Options::default()
    }
}

/// Resize a `sw`x`sh` BGRA image to `dw`x`dh` RGB, with or without a flag.
fn run_resize(
    src: &[u8],
    (sw, sh): (usize, usize),
    (dw, dh): (usize, usize),
    threads: usize,
    cancel: Option<&AtomicBool>,
) -> (Result<(), KernelError>, Vec<u8>) {
    let sv = ImageRef::from_parts(src, sw, sh, PixelFormat::Bgra, None).unwrap();
    let mut out = vec![0u8; dw * dh * 3];
    let mut dv = ImageMut::from_parts(&mut out, dw, dh, PixelFormat::Rgb, None).unwrap();
    let r = match cancel {
        Some(c) => resize_cancellable(&sv, &mut dv, Method::Bilinear, &opts(threads), c),
        None => resize(&sv, &mut dv, Method::Bilinear, &opts(threads)),
    };
    (r, out)
}

#[test]
fn cancels_a_big_resize_from_another_thread_quickly() {
    let (s, d) = ((3000, 2000), (2999, 1999));
    let src = image(s.0, s.1, 4, 1);
    for threads in [1, 2] {
        let t = Instant::now();
        let (r, _) = run_resize(&src, s, d, threads, None);
        r.unwrap();
        let full = t.elapsed();
        let cancel = AtomicBool::new(false);
        let start = Barrier::new(2);
        let (r, returned, set_at) = std::thread::scope(|sc| {
            let h = sc.spawn(|| {
                start.wait();
                let r = run_resize(&src, s, d, threads, Some(&cancel)).0;
                (r, Instant::now())
            });
            start.wait();
            // A delay, not a synchronisation: wherever the flag lands the
            // assertions below hold; waiting a third of a full run only makes
            // it land mid-run rather than before the first row.
            let t0 = Instant::now();
            while t0.elapsed() < full / 3 {
                std::hint::spin_loop();
            }
            let set_at = Instant::now();
            cancel.store(true, Ordering::Relaxed);
            let (r, returned) = h.join().unwrap();
            (r, returned, set_at)
        });
        assert!(
            matches!(r, Err(KernelError::Cancelled)),
            "threads={threads}: {r:?} (a full run takes {full:?})"
        );
        let late = returned.saturating_duration_since(set_at);
        assert!(
            late < Duration::from_millis(100),
            "threads={threads}: returned {late:?} after the flag was set (full run {full:?})"
        );
        eprintln!("threads={threads}: full run {full:?}, stopped {late:?} after the flag");
    }
}

#[test]
fn uncancelled_runs_are_bit_identical() {
    let flag = AtomicBool::new(false);
    let src = image(640, 480, 4, 2);
    for threads in [1, 3] {
        for (d, method) in [
            ((333, 251), Method::Bilinear),
            ((320, 240), Method::Area),
            ((160, 120), Method::Area),
            ((640, 480), Method::Bilinear),
        ] {
            for to in [PixelFormat::Rgb, PixelFormat::Nv12, PixelFormat::Gray8] {
                let sv = ImageRef::from_parts(&src, 640, 480, PixelFormat::Bgra, None).unwrap();
                let mut dw = d.0;
                if to.is_planar() {
                    dw &= !1;
                }
                let l = framebus_core::FrameLayout::new(dw, d.1 & !1, to, None).unwrap();
                let (mut a, mut b) = (vec![1u8; l.byte_len()], vec![2u8; l.byte_len()]);
                let mut av = ImageMut::new(&mut a, l).unwrap();
                resize(&sv, &mut av, method, &opts(threads)).unwrap();
                let mut bv = ImageMut::new(&mut b, l).unwrap();
                resize_cancellable(&sv, &mut bv, method, &opts(threads), &flag).unwrap();
                assert!(a == b, "resize {d:?} {method:?} to {to} threads={threads}");
            }
        }
        // convert
        let sv = ImageRef::from_parts(&src, 640, 480, PixelFormat::Bgra, None).unwrap();
        let (mut a, mut b) = (vec![1u8; 640 * 480 * 3 / 2], vec![2u8; 640 * 480 * 3 / 2]);
        let mut av = ImageMut::from_parts(&mut a, 640, 480, PixelFormat::I420, None).unwrap();
        convert(&sv, &mut av, &opts(threads)).unwrap();
        let mut bv = ImageMut::from_parts(&mut b, 640, 480, PixelFormat::I420, None).unwrap();
        convert_cancellable(&sv, &mut bv, &opts(threads), &flag).unwrap();
        assert!(a == b, "convert threads={threads}");
        // to_tensor
        let spec = TensorSpec {
            width: 224,
            height: 224,
            method: Method::Area,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        };
        let (mut a, mut b) = (vec![0f32; 3 * 224 * 224], vec![1f32; 3 * 224 * 224]);
        to_tensor(&sv, &mut a, &spec, &opts(threads)).unwrap();
        to_tensor_cancellable(&sv, &mut b, &spec, &opts(threads), &flag).unwrap();
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "to_tensor threads={threads}"
        );
    }
}

#[test]
fn a_flag_set_beforehand_stops_every_entry_point_before_any_row() {
    let flag = AtomicBool::new(true);
    let src = image(64, 48, 4, 3);
    let sv = ImageRef::from_parts(&src, 64, 48, PixelFormat::Bgra, None).unwrap();
    let mut out = vec![7u8; 64 * 48 * 3];
    let mut dv = ImageMut::from_parts(&mut out, 64, 48, PixelFormat::Rgb, None).unwrap();
    let e = convert_cancellable(&sv, &mut dv, &Options::default(), &flag).unwrap_err();
    assert!(matches!(e, KernelError::Cancelled), "{e}");
    assert!(e.to_string().contains("cancel"), "{e}");
    let mut dv = ImageMut::from_parts(&mut out, 32, 24, PixelFormat::Rgb, None).unwrap();
    let e = resize_cancellable(&sv, &mut dv, Method::Area, &Options::default(), &flag);
    assert!(matches!(e, Err(KernelError::Cancelled)));
    let mut dv = ImageMut::from_parts(&mut out, 64, 24, PixelFormat::Nv12, None).unwrap();
    let e = resize_cancellable(&sv, &mut dv, Method::Bilinear, &Options::default(), &flag);
    assert!(matches!(e, Err(KernelError::Cancelled)));
    assert!(out.iter().all(|&b| b == 7), "no row was written");
    let spec = TensorSpec {
        width: 16,
        height: 16,
        method: Method::Bilinear,
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    let mut t = vec![5f32; 3 * 16 * 16];
    let e = to_tensor_cancellable(&sv, &mut t, &spec, &Options::default(), &flag);
    assert!(matches!(e, Err(KernelError::Cancelled)));
    assert!(t.iter().all(|&v| v == 5.0));
}
