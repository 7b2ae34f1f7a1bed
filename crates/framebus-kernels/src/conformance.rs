//! Tests across modules: every SIMD level equals the scalar kernels, and whole
//! conversions equal a straightforward per-pixel reference, on random images
//! of awkward sizes (1×1, odd widths, padded strides), single- and multi-threaded.
//! Test-only; depends on everything in the crate.

use crate::scalar::Chroma;
use crate::simd::{kernels, Simd};
use crate::spec::{self, YuvMatrix, YuvRange};
use crate::{convert, resize, to_tensor, ImageMut, ImageRef, Method, Options, TensorSpec};
use framebus_core::{FrameLayout, PixelFormat};

/// xorshift64*: deterministic random bytes without a dependency.
pub(crate) struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 32) as u8).collect()
    }
}

const WIDTHS: [usize; 12] = [1, 2, 3, 5, 15, 16, 17, 31, 33, 64, 65, 130];

#[test]
fn every_level_matches_scalar_row_kernels() {
    let scalar = kernels(Some(Simd::Scalar)).unwrap();
    let levels = Simd::available();
    assert!(levels.contains(&Simd::Scalar));
    let mut rng = Rng::new(1);
    use PixelFormat::*;
    let packed8 = [Bgra, Bgrx, Rgba, Rgb, Bgr, Gray8];
    for level in levels {
        let k = kernels(Some(level)).unwrap();
        assert_eq!(k.level, level);
        for &w in &WIDTHS {
            for s in packed8 {
                let src = rng.bytes(w * 4 + 7);
                for d in packed8 {
                    if s == d {
                        continue;
                    }
                    let (mut a, mut b) = (vec![0xAAu8; w * 4 + 40], vec![0xAAu8; w * 4 + 40]);
                    // SAFETY: both tables come from `kernels`, which checked the CPU.
                    unsafe {
                        if d == Gray8 {
                            if s == Gray8 {
                                continue;
                            }
                            let sp = spec::luma_spec(s);
                            (scalar.luma)(&sp, &src, &mut a, w);
                            (k.luma)(&sp, &src, &mut b, w);
                        } else {
                            let sp = spec::shuf_spec(s, d);
                            (scalar.shuffle)(&sp, &src, &mut a, w);
                            (k.shuffle)(&sp, &src, &mut b, w);
                        }
                    }
                    assert_eq!(a, b, "{level} {s}->{d} w={w}");
                }
            }
            let n = w * 4;
            let src = rng.bytes(2 * n);
            let (mut a, mut b) = (vec![0u8; n + 9], vec![0u8; n + 9]);
            // SAFETY: as above.
            unsafe {
                (scalar.u16_to_u8)(&src, &mut a, n);
                (k.u16_to_u8)(&src, &mut b, n);
            }
            assert_eq!(a, b, "{level} u16_to_u8 n={n}");
            let (mut a, mut b) = (vec![0u8; 2 * n + 9], vec![0u8; 2 * n + 9]);
            // SAFETY: as above.
            unsafe {
                (scalar.u8_to_u16)(&src[..n], &mut a, n);
                (k.u8_to_u16)(&src[..n], &mut b, n);
            }
            assert_eq!(a, b, "{level} u8_to_u16 n={n}");
            let (r0, r1) = (rng.bytes(8 * w), rng.bytes(8 * w));
            let (mut a, mut b) = (vec![0u8; 4 * w + 3], vec![0u8; 4 * w + 3]);
            // SAFETY: as above.
            unsafe {
                (scalar.box2_4)(&r0, &r1, &mut a, w);
                (k.box2_4)(&r0, &r1, &mut b, w);
            }
            assert_eq!(a, b, "{level} box2_4 w={w}");
            if w % 2 == 0 {
                for s in [Bgra, Bgrx, Rgba, Rgb, Bgr] {
                    for (m, r) in [
                        (YuvMatrix::Bt601, YuvRange::Limited),
                        (YuvMatrix::Bt709, YuvRange::Full),
                    ] {
                        let sp = spec::yuv_spec(s, m, r);
                        let (s0, s1) = (rng.bytes(w * 4), rng.bytes(w * 4));
                        let mut out = [(); 2].map(|_| (vec![0u8; w], vec![0u8; w], vec![0u8; w]));
                        for (i, kk) in [scalar, k].into_iter().enumerate() {
                            let (y0, y1, c) = &mut out[i];
                            // SAFETY: as above.
                            unsafe { (kk.yuv)(&sp, &s0, &s1, y0, y1, Chroma::Nv12(c), w) };
                        }
                        assert_eq!(out[0], out[1], "{level} {s}->NV12 {m:?} {r:?} w={w}");
                        let mut o2 = [(); 2].map(|_| (vec![0u8; w / 2], vec![0u8; w / 2]));
                        for (i, kk) in [scalar, k].into_iter().enumerate() {
                            let (u, v) = &mut o2[i];
                            let (mut y0, mut y1) = (vec![0u8; w], vec![0u8; w]);
                            // SAFETY: as above.
                            unsafe {
                                (kk.yuv)(&sp, &s0, &s1, &mut y0, &mut y1, Chroma::I420(u, v), w)
                            };
                        }
                        assert_eq!(o2[0], o2[1], "{level} {s}->I420 w={w}");
                    }
                }
            }
        }
    }
}

fn decode8(f: PixelFormat, p: &[u8]) -> [u8; 4] {
    use PixelFormat::*;
    match f {
        Bgra => [p[2], p[1], p[0], p[3]],
        Bgrx => [p[2], p[1], p[0], 255],
        Rgba => [p[0], p[1], p[2], p[3]],
        Rgb => [p[0], p[1], p[2], 255],
        Bgr => [p[2], p[1], p[0], 255],
        Gray8 => [p[0], p[0], p[0], 255],
        _ => unreachable!(),
    }
}

fn encode8(f: PixelFormat, c: [u8; 4]) -> Vec<u8> {
    use PixelFormat::*;
    let [r, g, b, a] = c;
    let y = ((9798 * r as u32 + 19234 * g as u32 + 3736 * b as u32 + 16384) >> 15) as u8;
    match f {
        Bgra => vec![b, g, r, a],
        Bgrx => vec![b, g, r, 255],
        Rgba => vec![r, g, b, a],
        Rgb => vec![r, g, b],
        Bgr => vec![b, g, r],
        Gray8 => vec![y],
        _ => unreachable!(),
    }
}

fn u16at(p: &[u8], i: usize) -> u32 {
    u16::from_ne_bytes([p[2 * i], p[2 * i + 1]]) as u32
}

/// Reference: one pixel of `s` (bytes `p`) in format `d` (packed).
fn ref_pixel(s: PixelFormat, d: PixelFormat, p: &[u8]) -> Vec<u8> {
    use PixelFormat::*;
    let to8 = |v: u32| ((v + 128) / 257) as u8;
    let w16 = |v: u32| (v as u16).to_ne_bytes();
    if s == d {
        return p.to_vec();
    }
    match (s, d) {
        (Rgba16, Gray16) => {
            let y = (9798 * u16at(p, 0) + 19234 * u16at(p, 1) + 3736 * u16at(p, 2) + 16384) >> 15;
            w16(y).to_vec()
        }
        (Gray16, Rgba16) => [w16(u16at(p, 0)); 3]
            .concat()
            .into_iter()
            .chain([255, 255])
            .collect(),
        (Rgba16, _) => ref_pixel(
            Rgba,
            d,
            &(0..4).map(|i| to8(u16at(p, i))).collect::<Vec<_>>(),
        ),
        (Gray16, _) => ref_pixel(Gray8, d, &[to8(u16at(p, 0))]),
        (_, Rgba16) | (_, Gray16) => {
            let mid = if d == Rgba16 { Rgba } else { Gray8 };
            let b = ref_pixel(s, mid, p);
            b.iter().flat_map(|&v| w16(v as u32 * 257)).collect()
        }
        _ => encode8(d, decode8(s, p)),
    }
}

fn rgb_of(s: PixelFormat, p: &[u8]) -> [i32; 3] {
    let b = ref_pixel(s, PixelFormat::Rgb, p);
    [b[0] as i32, b[1] as i32, b[2] as i32]
}

/// Reference YUV 4:2:0 (planes packed with luma stride `stride`).
#[allow(clippy::too_many_arguments)]
fn ref_yuv(
    s: PixelFormat,
    src: &[u8],
    ss: usize,
    w: usize,
    h: usize,
    d: PixelFormat,
    stride: usize,
    m: YuvMatrix,
    r: YuvRange,
    out: &mut [u8],
) {
    let (k, off) = spec::yuv_weights(m, r);
    let bpp = s.bytes_per_pixel();
    let px = |x: usize, y: usize| rgb_of(s, &src[y * ss + x * bpp..y * ss + (x + 1) * bpp]);
    let dot = |k: [i32; 3], c: [i32; 3]| k[0] * c[0] + k[1] * c[1] + k[2] * c[2];
    for y in 0..h {
        for x in 0..w {
            let v = (dot(k[0], px(x, y)) + (off << 15) + (1 << 14)) >> 15;
            out[y * stride + x] = v.clamp(0, 255) as u8;
        }
    }
    for by in 0..h / 2 {
        for bx in 0..w / 2 {
            let mut sum = [0; 3];
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let c = px(2 * bx + dx, 2 * by + dy);
                (0..3).for_each(|i| sum[i] += c[i]);
            }
            let u = ((dot(k[1], sum) + (128 << 17) + (1 << 16)) >> 17).clamp(0, 255) as u8;
            let v = ((dot(k[2], sum) + (128 << 17) + (1 << 16)) >> 17).clamp(0, 255) as u8;
            let base = stride * h;
            if d == PixelFormat::Nv12 {
                out[base + by * stride + 2 * bx] = u;
                out[base + by * stride + 2 * bx + 1] = v;
            } else {
                let cs = stride / 2;
                out[base + by * cs + bx] = u;
                out[base + cs * h / 2 + by * cs + bx] = v;
            }
        }
    }
}

const SIZES: [(usize, usize); 6] = [(1, 1), (2, 2), (3, 5), (17, 3), (66, 9), (130, 34)];

#[test]
fn every_conversion_matches_the_reference() {
    let mut rng = Rng::new(7);
    let packed = PixelFormat::ALL
        .iter()
        .copied()
        .filter(|f| !f.is_planar())
        .collect::<Vec<_>>();
    for level in Simd::available() {
        for threads in [Some(1), None] {
            for &(w, h) in &SIZES {
                for &s in &packed {
                    let ss = w * s.bytes_per_pixel() + 2 * s.sample_bytes() * 3;
                    let src = rng.bytes(ss * h);
                    let sv = ImageRef::from_parts(&src, w, h, s, Some(ss)).unwrap();
                    for &d in PixelFormat::ALL.iter() {
                        let opts = Options {
                            simd: Some(level),
                            threads,
                            matrix: YuvMatrix::Bt709,
                            range: YuvRange::Limited,
                        };
                        if d.is_planar() && (w % 2 == 1 || h % 2 == 1) {
                            continue;
                        }
                        let ds = w * d.bytes_per_pixel() + 4 * d.sample_bytes();
                        let lay = FrameLayout::new(w, h, d, Some(ds)).unwrap();
                        let mut out = vec![0x5Au8; lay.byte_len()];
                        convert(&sv, &mut ImageMut::new(&mut out, lay).unwrap(), &opts).unwrap();
                        let mut want = vec![0x5Au8; lay.byte_len()];
                        if d.is_planar() {
                            ref_yuv(s, &src, ss, w, h, d, ds, opts.matrix, opts.range, &mut want);
                        } else {
                            let (sb, db) = (s.bytes_per_pixel(), d.bytes_per_pixel());
                            for y in 0..h {
                                for x in 0..w {
                                    let p = &src[y * ss + x * sb..y * ss + (x + 1) * sb];
                                    let o = y * ds + x * db;
                                    want[o..o + db].copy_from_slice(&ref_pixel(s, d, p));
                                }
                            }
                        }
                        assert!(out == want, "{level} {threads:?} {s}->{d} {w}x{h}");
                    }
                }
            }
        }
    }
}

#[test]
fn large_images_split_into_bands_match_single_thread() {
    let (w, h) = (1001, 700);
    let mut rng = Rng::new(3);
    let src = rng.bytes(w * 4 * h);
    let sv = ImageRef::from_parts(&src, w, h, PixelFormat::Bgra, None).unwrap();
    for d in [PixelFormat::Rgb, PixelFormat::Gray8, PixelFormat::Rgba16] {
        let lay = FrameLayout::new(w, h, d, None).unwrap();
        let mut outs = Vec::new();
        for threads in [Some(1), None, Some(3)] {
            let mut out = vec![0u8; lay.byte_len()];
            let opts = Options {
                threads,
                ..Default::default()
            };
            convert(&sv, &mut ImageMut::new(&mut out, lay).unwrap(), &opts).unwrap();
            outs.push(out);
        }
        assert!(outs[0] == outs[1] && outs[1] == outs[2], "{d}");
    }
    let lay = FrameLayout::new(1000, 700, PixelFormat::I420, None).unwrap();
    let sv = ImageRef::from_parts(&src, 1000, h, PixelFormat::Bgra, Some(w * 4)).unwrap();
    let mut a = vec![0u8; lay.byte_len()];
    let mut b = vec![0u8; lay.byte_len()];
    let one = Options {
        threads: Some(1),
        ..Default::default()
    };
    convert(&sv, &mut ImageMut::new(&mut a, lay).unwrap(), &one).unwrap();
    convert(
        &sv,
        &mut ImageMut::new(&mut b, lay).unwrap(),
        &Options::default(),
    )
    .unwrap();
    assert!(a == b);
}

#[test]
fn lossless_round_trips() {
    let mut rng = Rng::new(11);
    let (w, h) = (37, 5);
    let one = Options::default();
    let rt = |s: PixelFormat, d: PixelFormat, src: &[u8]| {
        let sv = ImageRef::from_parts(src, w, h, s, None).unwrap();
        let mid_l = FrameLayout::new(w, h, d, None).unwrap();
        let mut mid = vec![0u8; mid_l.byte_len()];
        convert(&sv, &mut ImageMut::new(&mut mid, mid_l).unwrap(), &one).unwrap();
        let mut back = vec![0u8; src.len()];
        let mv = ImageRef::new(&mid, mid_l).unwrap();
        convert(
            &mv,
            &mut ImageMut::from_parts(&mut back, w, h, s, None).unwrap(),
            &one,
        )
        .unwrap();
        back
    };
    use PixelFormat::*;
    for (s, d) in [
        (Bgra, Rgba),
        (Rgb, Bgr),
        (Rgba, Rgba16),
        (Gray8, Gray16),
        (Bgra, Rgba16),
    ] {
        let src = rng.bytes(w * h * s.bytes_per_pixel());
        assert!(rt(s, d, &src) == src, "{s} -> {d} -> {s}");
    }
}

#[test]
fn errors_name_the_values() {
    let buf = vec![0u8; 64];
    let sv = ImageRef::from_parts(&buf, 4, 4, PixelFormat::Bgra, None).unwrap();
    let mut out = vec![0u8; 48];
    let mut dv = ImageMut::from_parts(&mut out, 4, 3, PixelFormat::Rgb, None).unwrap();
    let e = convert(&sv, &mut dv, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("4x4") && e.contains("4x3"), "{e}");
    let nv = ImageRef::from_parts(&buf[..24], 4, 4, PixelFormat::Nv12, None).unwrap();
    let mut dv = ImageMut::from_parts(&mut out, 4, 4, PixelFormat::Rgb, None).unwrap();
    let e = convert(&nv, &mut dv, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("NV12 to RGB"), "{e}");
    let bad = Options {
        simd: Some(Simd::Neon),
        ..Default::default()
    };
    if !Simd::Neon.is_available() {
        let e = convert(&sv, &mut dv, &bad).unwrap_err().to_string();
        assert!(e.contains("neon is not available"), "{e}");
    }
    assert!("avx9"
        .parse::<Simd>()
        .unwrap_err()
        .to_string()
        .contains("\"avx9\""));
}

/// Reference resampler: the documented formula, pixel by pixel.
fn ref_resize(
    src: &[u8],
    w: usize,
    h: usize,
    c: usize,
    ow: usize,
    oh: usize,
    m: Method,
) -> Vec<u8> {
    use crate::resize::Axis;
    let (xa, ya) = match m {
        Method::Area => (Axis::area(w, ow), Axis::area(h, oh)),
        Method::Bilinear => (Axis::bilinear(w, ow), Axis::bilinear(h, oh)),
    };
    let mut out = vec![0u8; ow * oh * c];
    for oy in 0..oh {
        let (sy, wy) = ya.taps_pub(oy);
        for ox in 0..ow {
            let (sx, wx) = xa.taps_pub(ox);
            for ch in 0..c {
                let mut v = 0u64;
                for (j, &wyj) in wy.iter().enumerate() {
                    for (i, &wxi) in wx.iter().enumerate() {
                        v += (wyj * wxi) as u64 * src[((sy + j) * w + sx + i) * c + ch] as u64;
                    }
                }
                out[(oy * ow + ox) * c + ch] = ((v + (1 << 21)) >> 22) as u8;
            }
        }
    }
    out
}

#[test]
fn resize_matches_reference_and_fuses_conversion() {
    let mut rng = Rng::new(5);
    for (w, h, ow, oh) in [
        (8, 6, 4, 3),
        (17, 9, 5, 4),
        (3, 3, 7, 5),
        (64, 36, 16, 9),
        (1, 1, 3, 2),
        (34, 18, 17, 9),
        (64, 32, 8, 4),
        (12, 6, 4, 2),
        (300, 200, 224, 224),
        (640, 360, 101, 57),
    ] {
        let src = rng.bytes(w * h * 4);
        let sv = ImageRef::from_parts(&src, w, h, PixelFormat::Bgra, None).unwrap();
        for m in [Method::Area, Method::Bilinear] {
            let want = ref_resize(&src, w, h, 4, ow, oh, m);
            let runs = Simd::available().into_iter().map(|l| (Some(l), Some(1)));
            for (simd, threads) in runs.chain([(None, None)]) {
                let opts = Options {
                    simd,
                    threads,
                    ..Default::default()
                };
                let mut out = vec![0u8; ow * oh * 4];
                let mut dv =
                    ImageMut::from_parts(&mut out, ow, oh, PixelFormat::Bgra, None).unwrap();
                resize(&sv, &mut dv, m, &opts).unwrap();
                assert_eq!(out, want, "{w}x{h}->{ow}x{oh} {m:?} {simd:?}");
                // fused BGRA -> RGB equals resize then convert
                let mut rgb = vec![0u8; ow * oh * 3];
                let mut dv =
                    ImageMut::from_parts(&mut rgb, ow, oh, PixelFormat::Rgb, None).unwrap();
                resize(&sv, &mut dv, m, &opts).unwrap();
                let want_rgb: Vec<u8> = want.chunks(4).flat_map(|p| [p[2], p[1], p[0]]).collect();
                assert_eq!(rgb, want_rgb);
            }
        }
    }
    // power-of-two area = rounded box mean
    let src: Vec<u8> = (0..16).map(|i| i as u8 * 10).collect();
    let sv = ImageRef::from_parts(&src, 4, 4, PixelFormat::Gray8, None).unwrap();
    let mut out = vec![0u8; 4];
    let mut dv = ImageMut::from_parts(&mut out, 2, 2, PixelFormat::Gray8, None).unwrap();
    resize(&sv, &mut dv, Method::Area, &Options::default()).unwrap();
    let mean = |a: [u32; 4]| ((a.iter().sum::<u32>() * 10 + 2) / 4) as u8;
    assert_eq!(
        out,
        vec![
            mean([0, 1, 4, 5]),
            mean([2, 3, 6, 7]),
            mean([8, 9, 12, 13]),
            mean([10, 11, 14, 15])
        ]
    );
}

#[test]
fn tensor_is_planar_normalised_rgb() {
    let src = [10u8, 20, 30, 255, 40, 50, 60, 255]; // two BGRA pixels
    let sv = ImageRef::from_parts(&src, 2, 1, PixelFormat::Bgra, None).unwrap();
    let mut out = vec![0f32; 6];
    let spec = TensorSpec {
        width: 2,
        height: 1,
        method: Method::Area,
        mean: [0.5, 0.25, 0.0],
        std: [0.5, 2.0, 1.0],
    };
    to_tensor(&sv, &mut out, &spec, &Options::default()).unwrap();
    let f = |v: u8, m: f32, s: f32| (v as f32 / 255.0 - m) / s;
    assert_eq!(
        out,
        vec![
            f(30, 0.5, 0.5),
            f(60, 0.5, 0.5),
            f(20, 0.25, 2.0),
            f(50, 0.25, 2.0),
            f(10, 0.0, 1.0),
            f(40, 0.0, 1.0)
        ]
    );
    let bad = TensorSpec {
        std: [1.0, 0.0, 1.0],
        ..spec
    };
    assert!(to_tensor(&sv, &mut out, &bad, &Options::default())
        .unwrap_err()
        .to_string()
        .contains("std"));
}

/// A 64-byte-aligned window of `n` bytes inside `v`.
fn aligned(v: &mut Vec<u8>, n: usize) -> &mut [u8] {
    v.resize(n + 64, 0);
    let off = v.as_ptr().align_offset(64);
    &mut v[off..off + n]
}

#[test]
fn streaming_stores_give_the_same_bytes() {
    // Destinations ≥ STREAM_MIN_BYTES take the streaming-store path when aligned.
    let (w, h) = (2560, 2200);
    let mut rng = Rng::new(9);
    let src = rng.bytes(w * h * 4);
    let sv = ImageRef::from_parts(&src, w, h, PixelFormat::Bgra, None).unwrap();
    for d in [PixelFormat::Rgb, PixelFormat::Rgba] {
        let lay = FrameLayout::new(w, h, d, None).unwrap();
        assert!(lay.byte_len() >= crate::STREAM_MIN_BYTES);
        let mut want = vec![0u8; lay.byte_len()];
        let scalar = Options {
            simd: Some(Simd::Scalar),
            ..Default::default()
        };
        convert(&sv, &mut ImageMut::new(&mut want, lay).unwrap(), &scalar).unwrap();
        for (level, skew) in Simd::available().into_iter().flat_map(|l| [(l, 0), (l, 7)]) {
            // aligned, and 7 bytes off (the first pixels then go to scalar code)
            let mut buf = Vec::new();
            let out = &mut aligned(&mut buf, lay.byte_len() + 7)[skew..skew + lay.byte_len()];
            let opts = Options {
                simd: Some(level),
                ..Default::default()
            };
            convert(&sv, &mut ImageMut::new(out, lay).unwrap(), &opts).unwrap();
            assert!(*out == want[..], "{level} {d} skew {skew}");
        }
    }
}

/// Both x86 shuffle bodies, directly (the AVX2 table routes some shapes to the
/// SSSE3 one), with and without streaming stores, at awkward widths and offsets.
#[cfg(target_arch = "x86_64")]
#[test]
fn x86_shuffle_bodies_match_scalar_directly() {
    use PixelFormat::*;
    let mut rng = Rng::new(13);
    let fmts = [Bgra, Bgrx, Rgba, Rgb, Bgr, Gray8];
    for &w in WIDTHS.iter().chain(&[64, 100, 257]) {
        for s in fmts {
            for d in [Bgra, Bgrx, Rgba, Rgb, Bgr] {
                let src = rng.bytes(w * 4 + 7);
                for stream in [false, true] {
                    let sp = crate::spec::ShufSpec {
                        stream,
                        ..spec::shuf_spec(s, d)
                    };
                    let mut want = vec![0x33u8; w * 4 + 40];
                    crate::scalar::shuffle(&sp, &src, &mut want, w);
                    for skew in [0, 5] {
                        let mut buf = Vec::new();
                        let n = w * 4 + 40;
                        let out = &mut aligned(&mut buf, n + skew)[skew..skew + n];
                        if Simd::Ssse3.is_available() {
                            out.fill(0x33);
                            // SAFETY: SSSE3 is available (checked above).
                            unsafe { crate::x86_ssse3::shuffle(&sp, &src, out, w) };
                            assert!(*out == want[..], "ssse3 {s}->{d} w={w} {stream} {skew}");
                        }
                        if Simd::Avx2.is_available() {
                            out.fill(0x33);
                            // SAFETY: AVX2 is available (checked above).
                            unsafe { crate::x86_avx2::shuffle(&sp, &src, out, w) };
                            assert!(*out == want[..], "avx2 {s}->{d} w={w} {stream} {skew}");
                        }
                    }
                }
            }
        }
    }
}
