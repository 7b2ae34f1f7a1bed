//! Resizing of 8-bit packed images (bilinear, area = box for integer factors),
//! fused with the format conversion, and planar CHW float32 tensor output.
//!
//! Separable integer resampling with 11-bit weights (each output pixel's weights
//! along an axis sum to exactly 2048):
//! `h = Σ wx·p` (horizontal), `v = Σ wy·h` (vertical), `out = (v + 2^21) >> 22`.
//! * bilinear: pixel centres aligned (`sx = (x + ½)·in/out − ½`, clamped at the
//!   edges, as OpenCV's `INTER_LINEAR`); `fx = floor(frac · 2048)`, weights
//!   `(2048 − fx, fx)`.
//! * area: each output pixel averages the source area it covers; weight =
//!   overlap length, scaled to 2048 with `floor`, the remainder added to the
//!   first largest weight. For power-of-two factors this is the exact rounded
//!   box mean `(Σp + n/2) / n`.
//!
//! Each output row is resampled into a one-row buffer in the source format and
//! then converted by the same row kernels as `convert` straight into the
//! destination (one pass over the source; no full-size temporary). Rows are
//! resampled in scalar code (the compiler vectorises the inner loops); the
//! conversion steps use the SIMD kernels. Depends on `convert` and `image`.

use crate::convert::{drive, for_each, plan, Options, Rows, Stop};
use crate::image::{ImageMut, ImageRef};
use crate::simd::{kernels, Kernels};
use crate::spec::channels;
use crate::{KernelError, Result};
use framebus_core::PixelFormat;
use std::str::FromStr;
use std::sync::atomic::AtomicBool;

/// Weight bits of one axis.
const W_BITS: u32 = 11;
const ONE: u32 = 1 << W_BITS;

/// Resampling method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Method {
    /// Linear interpolation between the 2×2 nearest source pixels.
    #[default]
    Bilinear,
    /// Area average (box filter for integer factors); best for downscaling.
    Area,
}

impl FromStr for Method {
    type Err = KernelError;
    fn from_str(s: &str) -> Result<Method> {
        match s.to_ascii_lowercase().as_str() {
            "bilinear" | "linear" => Ok(Method::Bilinear),
            "area" | "box" => Ok(Method::Area),
            _ => Err(KernelError::Invalid {
                what: "resize method",
                value: format!("{s:?}"),
                why: "expected \"bilinear\" or \"area\"".into(),
            }),
        }
    }
}

/// The taps of every output position along one axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Axis {
    /// First source index of output `i`.
    start: Vec<usize>,
    /// `w[off[i]..off[i + 1]]` are output `i`'s weights (sum 2048).
    off: Vec<usize>,
    w: Vec<u32>,
}

impl Axis {
    fn taps(&self, i: usize) -> (usize, &[u32]) {
        (self.start[i], &self.w[self.off[i]..self.off[i + 1]])
    }

    #[cfg(test)]
    pub(crate) fn taps_pub(&self, i: usize) -> (usize, &[u32]) {
        self.taps(i)
    }

    fn push(&mut self, start: usize, w: &[u32]) {
        debug_assert_eq!(w.iter().sum::<u32>(), ONE);
        self.start.push(start);
        self.w.extend_from_slice(w);
        self.off.push(self.w.len());
    }

    fn new(n: usize) -> Axis {
        Axis {
            start: Vec::with_capacity(n),
            off: vec![0],
            w: Vec::new(),
        }
    }

    pub(crate) fn bilinear(inp: usize, out: usize) -> Axis {
        let mut a = Axis::new(out);
        let (inp_i, den) = (inp as i64, 2 * out as i64);
        for i in 0..out as i64 {
            let num = (2 * i + 1) * inp_i - out as i64;
            if num <= 0 {
                a.push(0, &[ONE]);
                continue;
            }
            let x0 = (num / den) as usize;
            let f = ((num % den) * ONE as i64 / den) as u32;
            if x0 + 1 >= inp || f == 0 {
                a.push(x0.min(inp - 1), &[ONE]);
            } else {
                a.push(x0, &[ONE - f, f]);
            }
        }
        a
    }

    pub(crate) fn area(inp: usize, out: usize) -> Axis {
        let mut a = Axis::new(out);
        let mut w = Vec::new();
        for i in 0..out {
            // Output i covers [i·in, (i+1)·in) in units of 1/out source pixels.
            let (lo, hi) = (i * inp, (i + 1) * inp);
            let (j0, j1) = (lo / out, (hi - 1) / out);
            w.clear();
            for j in j0..=j1 {
                w.push((hi.min((j + 1) * out) - lo.max(j * out)) as u64);
            }
            let mut q: Vec<u32> = w
                .iter()
                .map(|&r| (r * ONE as u64 / inp as u64) as u32)
                .collect();
            let rem = ONE - q.iter().sum::<u32>();
            let max = *w.iter().max().expect("at least one tap");
            let at = w.iter().position(|&r| r == max).expect("max exists");
            q[at] += rem;
            a.push(j0, &q);
        }
        a
    }
}

impl Axis {
    /// `(first, second, w_first, w_second)` per output when no output has more
    /// than two taps (bilinear; area when upscaling), else `None`.
    fn pairs(&self, inp: usize) -> Option<Vec<(usize, usize, u32, u32)>> {
        (0..self.start.len())
            .map(|i| match self.taps(i) {
                (s, [w]) => Some((s, s, *w, 0)),
                (s, [w0, w1]) => Some((s, (s + 1).min(inp - 1), *w0, *w1)),
                _ => None,
            })
            .collect()
    }
}

/// Horizontal pass with at most two taps an output (the common bilinear case).
#[inline(always)]
fn hpass2<T: Copy + Into<u32>, const B: usize>(
    row: &[T],
    pairs: &[(usize, usize, u32, u32)],
    out: &mut [u32],
) {
    for (o, &(s0, s1, w0, w1)) in out.chunks_exact_mut(B).zip(pairs) {
        let (p0, p1) = (&row[s0 * B..s0 * B + B], &row[s1 * B..s1 * B + B]);
        for c in 0..B {
            o[c] = w0 * p0[c].into() + w1 * p1[c].into();
        }
    }
}

/// Horizontal pass of one source row into `out` (`out_w * B` sums).
#[inline(always)]
fn hpass<T: Copy + Into<u32>, const B: usize>(row: &[T], ax: &Axis, out: &mut [u32]) {
    for (i, o) in out.chunks_exact_mut(B).enumerate() {
        let (s, ws) = ax.taps(i);
        let mut acc = [0u32; B];
        for (t, &wt) in ws.iter().enumerate() {
            let p = &row[(s + t) * B..(s + t + 1) * B];
            for c in 0..B {
                acc[c] += wt * p[c].into();
            }
        }
        o.copy_from_slice(&acc);
    }
}

/// Resampled rows of a source image, in the source's format.
struct Resampler<'a, 'b> {
    src: &'b ImageRef<'a>,
    /// Filter vertically first (see [`vertical_first`]).
    vfirst: bool,
    /// Run the AVX2 build of the row code (the CPU was checked).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    avx2: bool,
    xa: Axis,
    /// `xa` as two-tap pairs, when it has no wider taps.
    xpairs: Option<Vec<(usize, usize, u32, u32)>>,
    ya: Axis,
    bpp: usize,
    out_w: usize,
}

/// A band's scratch: horizontally filtered source rows, kept while consecutive
/// output rows reuse them (bilinear and upscaling), and the vertical accumulator.
pub(crate) struct ResampleScratch {
    rows: Vec<(usize, Vec<u32>)>,
    acc: Vec<u32>,
    /// Vertically filtered full-width row (vertical-first order).
    vrow: Vec<u32>,
}

impl Resampler<'_, '_> {
    #[inline(always)]
    fn hpass<T: Copy + Into<u32>>(&self, row: &[T], out: &mut [u32]) {
        match (&self.xpairs, self.bpp) {
            (Some(p), 1) => hpass2::<T, 1>(row, p, out),
            (Some(p), 3) => hpass2::<T, 3>(row, p, out),
            (Some(p), _) => hpass2::<T, 4>(row, p, out),
            (None, 1) => hpass::<T, 1>(row, &self.xa, out),
            (None, 3) => hpass::<T, 3>(row, &self.xa, out),
            (None, _) => hpass::<T, 4>(row, &self.xa, out),
        }
    }

    /// Output row `y` filtering vertically first (contiguous, vectorisable
    /// multiply-adds over whole source rows), then horizontally once. Exact
    /// integer sums, so the result equals the horizontal-first order.
    #[inline(always)]
    fn row_vfirst(&self, y: usize, s: &mut ResampleScratch) {
        let (sy, wy) = self.ya.taps(y);
        let v = &mut s.vrow;
        for (t, &wt) in wy.iter().enumerate() {
            let row = self.src.row(sy + t);
            if t == 0 {
                for (a, &p) in v.iter_mut().zip(row) {
                    *a = wt * p as u32;
                }
            } else {
                for (a, &p) in v.iter_mut().zip(row) {
                    *a += wt * p as u32;
                }
            }
        }
        self.hpass(&s.vrow, &mut s.acc);
    }
}

impl Rows for Resampler<'_, '_> {
    type Scratch = ResampleScratch;

    fn scratch(&self) -> ResampleScratch {
        let n = self.out_w * self.bpp;
        let taps = (0..self.ya.start.len())
            .map(|i| self.ya.taps(i).1.len())
            .max()
            .unwrap_or(1);
        let vfirst = self.vfirst;
        ResampleScratch {
            rows: (0..if vfirst { 0 } else { taps })
                .map(|_| (usize::MAX, vec![0; n]))
                .collect(),
            acc: vec![0; n],
            vrow: vec![
                0;
                if vfirst {
                    self.src.layout().row_bytes()
                } else {
                    0
                }
            ],
        }
    }

    fn row_bytes(&self) -> usize {
        self.out_w * self.bpp
    }

    fn row<'a>(&'a self, y: usize, buf: &'a mut [u8], s: &mut ResampleScratch) -> &'a [u8] {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is set only when `simd::kernels` handed out the AVX2
            // table for this call, i.e. after checking that the CPU has AVX2.
            return unsafe { self.row_avx2(y, buf, s) };
        }
        self.row_any(y, buf, s)
    }
}

impl Resampler<'_, '_> {
    /// The same code as [`Resampler::row_any`], compiled for AVX2 so the
    /// compiler's auto-vectorisation uses 256-bit registers (integer maths:
    /// identical results).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn row_avx2<'a>(
        &'a self,
        y: usize,
        buf: &'a mut [u8],
        s: &mut ResampleScratch,
    ) -> &'a [u8] {
        self.row_any(y, buf, s)
    }

    #[inline(always)]
    fn row_any<'a>(&'a self, y: usize, buf: &'a mut [u8], s: &mut ResampleScratch) -> &'a [u8] {
        if self.vfirst {
            self.row_vfirst(y, s);
            return self.round(s, buf);
        }
        let (sy, wy) = self.ya.taps(y);
        s.acc.fill(0);
        for (t, &wt) in wy.iter().enumerate() {
            let r = sy + t;
            // Rows only move down: reuse a cached row, else replace the one
            // with the lowest source index (or an unused slot).
            let slot = match s.rows.iter().position(|(i, _)| *i == r) {
                Some(j) => j,
                None => {
                    let j = (0..s.rows.len())
                        .filter(|&j| s.rows[j].0 < sy || s.rows[j].0 == usize::MAX)
                        .min_by_key(|&j| s.rows[j].0.wrapping_add(1))
                        .unwrap_or(0);
                    let (i, h) = &mut s.rows[j];
                    self.hpass(self.src.row(r), h);
                    *i = r;
                    j
                }
            };
            for (a, &v) in s.acc.iter_mut().zip(s.rows[slot].1.iter()) {
                *a += wt * v;
            }
        }
        self.round(s, buf)
    }
}

impl Resampler<'_, '_> {
    #[inline(always)]
    fn round<'a>(&self, s: &ResampleScratch, buf: &'a mut [u8]) -> &'a [u8] {
        for (b, &a) in buf.iter_mut().zip(s.acc.iter()) {
            *b = ((a + (1 << (2 * W_BITS - 1))) >> (2 * W_BITS)) as u8;
        }
        buf
    }
}

/// Exact power-of-two box downscale (`f × f` source pixels a destination pixel):
/// `(Σp + f²/2) >> log2(f²)`, which is what `Axis::area` (and, for f = 2,
/// `Axis::bilinear`) weights give, computed without the weight tables.
struct BoxRows<'a, 'b> {
    k: &'static Kernels,
    src: &'b ImageRef<'a>,
    f: usize,
    bpp: usize,
    out_w: usize,
}

fn box2<const B: usize>(r0: &[u8], r1: &[u8], out: &mut [u8]) {
    for ((o, a), b) in out
        .chunks_exact_mut(B)
        .zip(r0.chunks_exact(2 * B))
        .zip(r1.chunks_exact(2 * B))
    {
        for c in 0..B {
            let s = a[c] as u16 + a[B + c] as u16 + b[c] as u16 + b[B + c] as u16;
            o[c] = ((s + 2) >> 2) as u8;
        }
    }
}

fn box_acc<const B: usize>(row: &[u8], f: usize, acc: &mut [u32]) {
    for (o, p) in acc.chunks_exact_mut(B).zip(row.chunks_exact(f * B)) {
        for px in p.chunks_exact(B) {
            for c in 0..B {
                o[c] += px[c] as u32;
            }
        }
    }
}

impl Rows for BoxRows<'_, '_> {
    type Scratch = Vec<u32>;

    fn scratch(&self) -> Vec<u32> {
        vec![0; self.out_w * self.bpp]
    }

    fn row_bytes(&self) -> usize {
        self.out_w * self.bpp
    }

    fn row<'a>(&'a self, y: usize, buf: &'a mut [u8], acc: &mut Vec<u32>) -> &'a [u8] {
        let f = self.f;
        if f == 2 {
            let (r0, r1) = (self.src.row(2 * y), self.src.row(2 * y + 1));
            match self.bpp {
                1 => box2::<1>(r0, r1, buf),
                3 => box2::<3>(r0, r1, buf),
                // SAFETY: the table was checked by `simd::kernels`.
                _ => unsafe { (self.k.box2_4)(r0, r1, buf, self.out_w) },
            }
            return buf;
        }
        acc.fill(0);
        for t in 0..f {
            let row = self.src.row(f * y + t);
            match self.bpp {
                1 => box_acc::<1>(row, f, acc),
                3 => box_acc::<3>(row, f, acc),
                _ => box_acc::<4>(row, f, acc),
            }
        }
        let shift = 2 * f.trailing_zeros();
        let half = (f * f / 2) as u32;
        for (b, &a) in buf.iter_mut().zip(acc.iter()) {
            *b = ((a + half) >> shift) as u8;
        }
        buf
    }
}

/// The box factor when `method` on these sizes is an exact power-of-two box.
fn box_factor(sw: usize, sh: usize, ow: usize, oh: usize, method: Method) -> Option<usize> {
    let f = sw / ow;
    let exact = f >= 2 && f.is_power_of_two() && sw == f * ow && sh == f * oh && f <= 64;
    match method {
        Method::Area if exact => Some(f),
        Method::Bilinear if exact && f == 2 => Some(2),
        _ => None,
    }
}

/// Whether filtering vertically first is cheaper: it multiplies whole source
/// rows (contiguous, vectorised; counted at a quarter) for every output row, then
/// filters each output row horizontally once; horizontal-first filters every
/// source row used (gathers) and then adds rows per output row.
fn vertical_first(xa: &Axis, ya: &Axis, in_w: usize, in_h: usize) -> bool {
    let (out_w, out_h) = (xa.start.len() as f64, ya.start.len() as f64);
    let tx = xa.w.len() as f64 / out_w;
    let ty = ya.w.len() as f64 / out_h;
    let rows_used = (in_h as f64).min(out_h * ty);
    let h_first = rows_used * out_w * tx + out_h * ty * out_w * 0.25;
    let v_first = out_h * ty * in_w as f64 * 0.25 + out_h * out_w * tx;
    v_first < h_first
}

fn resampler<'a, 'b>(
    src: &'b ImageRef<'a>,
    to: PixelFormat,
    out_w: usize,
    out_h: usize,
    method: Method,
    simd: Option<crate::Simd>,
) -> Result<Resampler<'a, 'b>> {
    let sl = src.layout();
    let c = channels(sl.format).ok_or(KernelError::Unsupported {
        op: "resize",
        from: sl.format,
        to,
        why: "resize reads 8-bit packed images (BGRA, BGRX, RGBA, RGB, BGR, GRAY8); \
              convert 16-bit images to 8 bits first",
    })?;
    let (xa, ya) = match method {
        Method::Bilinear => (
            Axis::bilinear(sl.width, out_w),
            Axis::bilinear(sl.height, out_h),
        ),
        Method::Area => (Axis::area(sl.width, out_w), Axis::area(sl.height, out_h)),
    };
    Ok(Resampler {
        src,
        vfirst: vertical_first(&xa, &ya, sl.width, sl.height),
        avx2: kernels(simd)?.level == crate::Simd::Avx2,
        xpairs: xa.pairs(sl.width),
        xa,
        ya,
        bpp: c.bpp,
        out_w,
    })
}

/// Resize `src` to `dst`'s size, converting to `dst`'s format in the same pass.
/// The source must be 8-bit packed; the destination may be any format
/// `convert` writes (including NV12/I420, for an encoder fed at a lower size).
pub fn resize(
    src: &ImageRef<'_>,
    dst: &mut ImageMut<'_>,
    method: Method,
    opts: &Options,
) -> Result<()> {
    resize_with(src, dst, method, opts, None)
}

/// [`resize`] that stops with [`KernelError::Cancelled`] once `cancel` is set
/// (checked before every output row; `dst` is then partly written). With
/// `cancel` never set the output is identical to [`resize`]'s.
pub fn resize_cancellable(
    src: &ImageRef<'_>,
    dst: &mut ImageMut<'_>,
    method: Method,
    opts: &Options,
    cancel: &AtomicBool,
) -> Result<()> {
    resize_with(src, dst, method, opts, Some(cancel))
}

fn resize_with(
    src: &ImageRef<'_>,
    dst: &mut ImageMut<'_>,
    method: Method,
    opts: &Options,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    let (sl, dl) = (*src.layout(), *dst.layout());
    let rs = resampler(src, dl.format, dl.width, dl.height, method, opts.simd)?;
    if (sl.width, sl.height) == (dl.width, dl.height) {
        // Both methods' weights are the identity here (one tap of 2048).
        return crate::convert::convert_with(src, dst, opts, cancel);
    }
    let plan = plan(sl.format, dl.format, opts.matrix, opts.range)?;
    if let Some(f) = box_factor(sl.width, sl.height, dl.width, dl.height, method) {
        let br = BoxRows {
            k: kernels(opts.simd)?,
            src,
            f,
            bpp: rs.bpp,
            out_w: dl.width,
        };
        return drive(&br, &plan, dst, sl.row_bytes() * f, opts, cancel);
    }
    drive(&rs, &plan, dst, sl.row_bytes(), opts, cancel)
}

/// Planar float output: size, method and per-channel normalisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorSpec {
    pub width: usize,
    pub height: usize,
    pub method: Method,
    /// Subtracted after scaling to 0..1, per R, G, B.
    pub mean: [f32; 3],
    /// Divided by after subtracting the mean, per R, G, B.
    pub std: [f32; 3],
}

/// Resize `src` and write it as planar RGB float32 (`3 × height × width`,
/// C-contiguous CHW): `((v / 255) − mean[c]) / std[c]`, each operation in f32
/// (so a NumPy float32 reference matches bit for bit).
pub fn to_tensor(
    src: &ImageRef<'_>,
    out: &mut [f32],
    spec: &TensorSpec,
    opts: &Options,
) -> Result<()> {
    to_tensor_with(src, out, spec, opts, None)
}

/// [`to_tensor`] that stops with [`KernelError::Cancelled`] once `cancel` is
/// set (checked before every output row; `out` is then partly written). With
/// `cancel` never set the output is identical to [`to_tensor`]'s.
pub fn to_tensor_cancellable(
    src: &ImageRef<'_>,
    out: &mut [f32],
    spec: &TensorSpec,
    opts: &Options,
    cancel: &AtomicBool,
) -> Result<()> {
    to_tensor_with(src, out, spec, opts, Some(cancel))
}

fn to_tensor_with(
    src: &ImageRef<'_>,
    out: &mut [f32],
    spec: &TensorSpec,
    opts: &Options,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    let stop = Stop::new(cancel);
    let stop = &stop;
    let (w, h) = (spec.width, spec.height);
    framebus_core::FrameLayout::new(w, h, PixelFormat::Rgb, None)?;
    if out.len() != 3 * w * h {
        return Err(KernelError::Invalid {
            what: "tensor length",
            value: out.len().to_string(),
            why: format!("expected 3 x {h} x {w} = {} floats", 3 * w * h),
        });
    }
    if let Some(s) = spec.std.iter().find(|s| **s == 0.0 || !s.is_finite()) {
        return Err(KernelError::Invalid {
            what: "std",
            value: s.to_string(),
            why: "must be finite and non-zero".into(),
        });
    }
    let sl = *src.layout();
    let rs = resampler(src, PixelFormat::Rgb, w, h, spec.method, opts.simd)?;
    let plan = plan(sl.format, PixelFormat::Rgb, opts.matrix, opts.range)?;
    let k = crate::simd::kernels(opts.simd)?;
    let row_bytes = sl.row_bytes() + 12 * w;
    let band = crate::convert::band_rows(row_bytes * h, row_bytes, h, opts.threads, false);
    let (r, rest) = out.split_at_mut(w * h);
    let (g, b) = rest.split_at_mut(w * h);
    let bands: Vec<_> = r
        .chunks_mut(band * w)
        .zip(g.chunks_mut(band * w))
        .zip(b.chunks_mut(band * w))
        .enumerate()
        .map(|(i, ((r, g), b))| (i * band, [r, g, b]))
        .collect();
    for_each(opts.threads, bands, |(y0, mut planes)| {
        let mut s = rs.scratch();
        let mut buf = vec![0u8; rs.row_bytes()];
        let mut rgb = vec![0u8; 3 * w];
        let mut tmp = vec![0u8; if plan.steps.len() > 1 { 8 * w } else { 0 }];
        let rows = planes[0].len() / w;
        for yy in 0..rows {
            if stop.now() {
                return;
            }
            let sr = rs.row(y0 + yy, &mut buf, &mut s);
            crate::convert::run_steps(k, &plan, sr, &mut rgb, &mut tmp, w);
            for (c, plane) in planes.iter_mut().enumerate() {
                let (m, sd) = (spec.mean[c], spec.std[c]);
                let dst = &mut plane[yy * w..(yy + 1) * w];
                for (d, px) in dst.iter_mut().zip(rgb.chunks_exact(3)) {
                    *d = (px[c] as f32 / 255.0 - m) / sd;
                }
            }
        }
    })?;
    stop.result()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_sum_to_one_and_box_is_exact() {
        for (i, o) in [(7, 3), (3840, 1920), (5, 9), (1, 4), (4, 1), (1000, 999)] {
            for a in [Axis::area(i, o), Axis::bilinear(i, o)] {
                for k in 0..o {
                    let (s, w) = a.taps(k);
                    assert_eq!(w.iter().sum::<u32>(), ONE);
                    assert!(s + w.len() <= i, "{i}->{o} tap {k} past the edge");
                }
            }
        }
        let a = Axis::area(8, 2);
        assert_eq!(a.taps(1), (4, &[512u32, 512, 512, 512][..]));
        let b = Axis::bilinear(4, 2);
        assert_eq!(b.taps(0), (0, &[1024u32, 1024][..]));
        assert_eq!(b.taps(1), (2, &[1024u32, 1024][..]));
    }
}
