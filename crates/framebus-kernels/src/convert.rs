//! Pixel-format conversion of whole images: planning (which row kernels, in
//! which order) and tiled, multi-core execution.
//!
//! A conversion is a chain of at most two row steps (e.g. RGBA16 → RGBA → BGR:
//! 16→8 bits, then a byte shuffle), optionally followed by the 2-row YUV 4:2:0
//! step. The destination is cut into bands of whole rows (an even number for
//! YUV) that are written in place, each with its own one-row scratch buffers,
//! so no full-size temporary ever exists. Bands run on rayon when the image is
//! larger than [`PAR_MIN_BYTES`] and `threads != 1`.
//!
//! Thread pools and `fork()`: bands never run on rayon's global pool. Every
//! thread count (`threads: None` / `Some(0)` meaning
//! `std::thread::available_parallelism()`) has its own cached rayon pool,
//! keyed by [`framebus_core::fork::generation`]. A forked child inherits the
//! parent's pools but not their worker threads, so work queued on them would
//! never run; in a child the inherited pools are abandoned (leaked, since
//! dropping them would signal threads that do not exist) and fresh pools are
//! started on first use, so a child converts at full speed and never hangs.
//! (As with any lock, a fork while another thread is creating a pool leaves
//! the child's copy of the cache's mutex locked: fork from a thread that is
//! not racing kernel calls.)
//!
//! Cancellation: the `*_cancellable` entry points take an `&AtomicBool`
//! checked before every row (every row pair for YUV output), on every band;
//! once it is set the call returns [`KernelError::Cancelled`] as soon as each
//! running band finishes its current row. The destination is then partly
//! written. The plain entry points never check and run the same code.
//!
//! Used by `resize` (for its row conversions) and the public API in `lib.rs`.

use crate::image::{ImageMut, ImageRef};
use crate::scalar::{self, Chroma};
use crate::simd::{kernels, Kernels, Simd};
use crate::spec::{self, LumaSpec, ShufSpec, YuvMatrix, YuvRange, YuvSpec};
use crate::{KernelError, Result};
use framebus_core::PixelFormat;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Images whose source plus destination bytes are below this stay on the
/// calling thread (thread hand-off costs more than it saves, ~1 MiB ≈ 512×512 BGRA).
pub const PAR_MIN_BYTES: usize = 1 << 20;
/// Target source-plus-destination bytes of one band when running in parallel
/// (small enough to balance 2–64 cores, large enough to amortise scheduling).
pub const BAND_BYTES: usize = 256 << 10;
/// Destinations at least this large are written with streaming stores (byte
/// shuffles only): about half this machine class's L3, beyond which the output
/// would not stay cached anyway.
pub const STREAM_MIN_BYTES: usize = 16 << 20;

/// How to run a kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Force a SIMD level (`None`: the best available, or `FRAMEBUS_SIMD`).
    pub simd: Option<Simd>,
    /// Threads: `None` or `Some(0)` = a cached pool of
    /// `available_parallelism()` threads (all cores), `Some(1)` = the calling
    /// thread only, `Some(n)` = a cached n-thread pool. Pools are per fork
    /// generation (see the module doc of `convert`), never rayon's global pool.
    pub threads: Option<usize>,
    /// YUV matrix for NV12/I420 output.
    pub matrix: YuvMatrix,
    /// YUV range for NV12/I420 output.
    pub range: YuvRange,
}

/// One row step.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step {
    Copy(usize),
    Shuffle(ShufSpec),
    Luma(LumaSpec),
    /// 16 → 8 bits, this many samples a pixel.
    U16to8(usize),
    /// 8 → 16 bits, this many samples a pixel.
    U8to16(usize),
    Luma16,
    Gray16ToRgba16,
}

/// The row steps of a conversion (≤ 2), plus the YUV step for planar output.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub steps: Vec<Step>,
    /// Bytes a pixel after each step (for scratch sizing).
    pub widths: Vec<usize>,
    pub yuv: Option<YuvSpec>,
}

fn is_colour8(f: PixelFormat) -> bool {
    matches!(
        f,
        PixelFormat::Bgra
            | PixelFormat::Bgrx
            | PixelFormat::Rgba
            | PixelFormat::Rgb
            | PixelFormat::Bgr
    )
}

/// Steps between two 8-bit packed formats (empty if equal).
fn route8(s: PixelFormat, d: PixelFormat) -> Vec<(Step, PixelFormat)> {
    if s == d {
        vec![]
    } else if d == PixelFormat::Gray8 {
        vec![(Step::Luma(spec::luma_spec(s)), d)]
    } else {
        vec![(Step::Shuffle(spec::shuf_spec(s, d)), d)]
    }
}

/// Steps between two packed formats (non-empty).
fn route(s: PixelFormat, d: PixelFormat) -> Vec<(Step, PixelFormat)> {
    use PixelFormat::*;
    if s == d {
        return vec![(Step::Copy(s.bytes_per_pixel()), d)];
    }
    match (s, d) {
        (Rgba16, Gray16) => vec![(Step::Luma16, d)],
        (Gray16, Rgba16) => vec![(Step::Gray16ToRgba16, d)],
        (Rgba16, _) => {
            let mut v = vec![(Step::U16to8(4), Rgba)];
            v.extend(route8(Rgba, d));
            v
        }
        (Gray16, _) => {
            let mut v = vec![(Step::U16to8(1), Gray8)];
            v.extend(route8(Gray8, d));
            v
        }
        (_, Rgba16) => {
            let mut v = route8(s, Rgba);
            v.push((Step::U8to16(4), d));
            v
        }
        (_, Gray16) => {
            let mut v = route8(s, Gray8);
            v.push((Step::U8to16(1), d));
            v
        }
        _ => route8(s, d),
    }
}

/// Plan a conversion from `s` to `d`.
pub(crate) fn plan(s: PixelFormat, d: PixelFormat, m: YuvMatrix, r: YuvRange) -> Result<Plan> {
    if s.is_planar() {
        return Err(KernelError::Unsupported {
            op: "convert",
            from: s,
            to: d,
            why: "YUV 4:2:0 is an output format only (for encoders); convert from RGB/BGR(A/X), \
                  GRAY8/16 or RGBA16",
        });
    }
    let (steps, yuv) = if d.is_planar() {
        // The YUV step reads an 8-bit colour format: the source itself when it is
        // one, else RGBA (from RGBA16) or RGB (from grey).
        let base = if is_colour8(s) {
            s
        } else if s == PixelFormat::Rgba16 {
            PixelFormat::Rgba
        } else {
            PixelFormat::Rgb
        };
        let pre = if base == s { vec![] } else { route(s, base) };
        (pre, Some(spec::yuv_spec(base, m, r)))
    } else {
        (route(s, d), None)
    };
    debug_assert!(steps.len() <= 2);
    Ok(Plan {
        widths: steps.iter().map(|(_, f)| f.bytes_per_pixel()).collect(),
        steps: steps.into_iter().map(|(st, _)| st).collect(),
        yuv,
    })
}

/// Run one step over `w` pixels.
pub(crate) fn run_step(k: &Kernels, st: &Step, src: &[u8], dst: &mut [u8], w: usize) {
    // SAFETY: `k` comes from `simd::kernels`, which checked that this CPU runs
    // its level; the kernels check slice lengths themselves.
    unsafe {
        match st {
            Step::Copy(bpp) => dst[..w * bpp].copy_from_slice(&src[..w * bpp]),
            Step::Shuffle(s) => (k.shuffle)(s, src, dst, w),
            Step::Luma(s) => (k.luma)(s, src, dst, w),
            Step::U16to8(c) => (k.u16_to_u8)(src, dst, w * c),
            Step::U8to16(c) => (k.u8_to_u16)(src, dst, w * c),
            Step::Luma16 => scalar::luma16(src, dst, w),
            Step::Gray16ToRgba16 => scalar::gray16_to_rgba16(src, dst, w),
        }
    }
}

/// Run the plan's (≤ 2) steps on one row, through `tmp` when there are two.
pub(crate) fn run_steps(
    k: &Kernels,
    plan: &Plan,
    src: &[u8],
    dst: &mut [u8],
    tmp: &mut [u8],
    w: usize,
) {
    match plan.steps.as_slice() {
        [] => dst[..src.len()].copy_from_slice(src),
        [a] => run_step(k, a, src, dst, w),
        [a, b] => {
            run_step(k, a, src, tmp, w);
            run_step(k, b, tmp, dst, w);
        }
        _ => unreachable!("plans have at most two steps"),
    }
}

/// The rows one band writes.
enum BandOut<'a> {
    Packed(&'a mut [u8]),
    Nv12(&'a mut [u8], &'a mut [u8]),
    I420(&'a mut [u8], &'a mut [u8], &'a mut [u8]),
}

struct Band<'a> {
    y0: usize,
    rows: usize,
    out: BandOut<'a>,
}

/// Cut `data` (rows of `stride` bytes) into pieces of `band` rows.
fn split_rows(mut data: &mut [u8], stride: usize, band: usize, rows: usize) -> Vec<&mut [u8]> {
    let n = rows.div_ceil(band);
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        if i + 1 == n {
            v.push(std::mem::take(&mut data));
        } else {
            let (a, b) = std::mem::take(&mut data).split_at_mut(band * stride);
            v.push(a);
            data = b;
        }
    }
    v
}

/// Rows a band should have for rows of `row_bytes` (source + destination).
pub(crate) fn band_rows(
    total_bytes: usize,
    row_bytes: usize,
    rows: usize,
    threads: Option<usize>,
    even: bool,
) -> usize {
    let band = if threads == Some(1) || total_bytes < PAR_MIN_BYTES {
        rows
    } else {
        (BAND_BYTES / row_bytes.max(1)).clamp(1, rows)
    };
    if even {
        (band + 1) & !1
    } else {
        band
    }
}

/// The cached pools of one fork generation.
#[derive(Default)]
struct Pools {
    generation: u64,
    by_threads: HashMap<usize, Arc<rayon::ThreadPool>>,
}

/// Threads of the `threads: None` pool: all the cores this process may use.
fn all_cores() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A cached rayon pool of `n` threads, started in this fork generation.
fn pool(n: usize) -> Result<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();
    // Read before the pools are made: a fork after this read is seen next time.
    let generation = framebus_core::fork::generation();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if pools.generation != generation {
        // A forked child: the inherited pools have no threads. Dropping them
        // would try to wake and join threads that do not exist, so leak them.
        std::mem::forget(std::mem::take(&mut pools.by_threads));
        pools.generation = generation;
    }
    if let Some(p) = pools.by_threads.get(&n) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("framebus-kernels-{i}"))
        .build()
        .map_err(|e| KernelError::ThreadPool {
            threads: n,
            msg: e.to_string(),
        })?;
    let p = Arc::new(p);
    pools.by_threads.insert(n, p.clone());
    Ok(p)
}

/// A caller's cancel flag, and whether a band saw it set.
pub(crate) struct Stop<'a> {
    flag: Option<&'a AtomicBool>,
    hit: AtomicBool,
}

impl<'a> Stop<'a> {
    pub(crate) fn new(flag: Option<&'a AtomicBool>) -> Self {
        Stop {
            flag,
            hit: AtomicBool::new(false),
        }
    }

    /// True when the run must stop now (checked before each row).
    #[inline]
    pub(crate) fn now(&self) -> bool {
        match self.flag {
            Some(f) if f.load(Ordering::Relaxed) => {
                self.hit.store(true, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// `Err(Cancelled)` when any band stopped early. Called after every band
    /// finished (`for_each` joins them), so the relaxed flag is visible.
    pub(crate) fn result(&self) -> Result<()> {
        if self.hit.load(Ordering::Relaxed) {
            Err(KernelError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Run `f` over `items`, in parallel when there is more than one.
pub(crate) fn for_each<T: Send, F: Fn(T) + Sync + Send>(
    threads: Option<usize>,
    items: Vec<T>,
    f: F,
) -> Result<()> {
    let n = match threads {
        None | Some(0) => all_cores(),
        Some(n) => n,
    };
    if items.len() <= 1 || n == 1 {
        items.into_iter().for_each(f);
        return Ok(());
    }
    pool(n)?.install(|| items.into_par_iter().for_each(f));
    Ok(())
}

/// A producer of source rows for [`drive`]: the rows of an image as they are
/// (conversion) or resampled rows (resize).
pub(crate) trait Rows: Sync {
    /// Per-band scratch state.
    type Scratch: Send;
    /// Fresh scratch for one band.
    fn scratch(&self) -> Self::Scratch;
    /// Bytes of one produced row.
    fn row_bytes(&self) -> usize;
    /// Row `y`: either borrowed from the source or written into `buf`.
    fn row<'a>(&'a self, y: usize, buf: &'a mut [u8], s: &mut Self::Scratch) -> &'a [u8];
}

/// The rows of an image, as they are.
struct Identity<'a, 'b>(&'b ImageRef<'a>);

impl Rows for Identity<'_, '_> {
    type Scratch = ();
    fn scratch(&self) {}
    fn row_bytes(&self) -> usize {
        0
    }
    fn row<'a>(&'a self, y: usize, _buf: &'a mut [u8], _s: &mut ()) -> &'a [u8] {
        self.0.row(y)
    }
}

/// Write `dst` from `rows` (each `src_row_bytes` wide in the plan's input
/// format) through `plan`, band by band, in parallel when large.
pub(crate) fn drive<R: Rows>(
    rows: &R,
    plan: &Plan,
    dst: &mut ImageMut<'_>,
    src_row_bytes: usize,
    opts: &Options,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    let stop = Stop::new(cancel);
    let stop = &stop;
    let k = kernels(opts.simd)?;
    let dl = *dst.layout();
    let mut plan = plan.clone();
    if dl.byte_len() >= STREAM_MIN_BYTES {
        if let Some(Step::Shuffle(s)) = plan.steps.last_mut() {
            s.stream = true;
        }
    }
    let plan = &plan;
    let (w, h) = (dl.width, dl.height);
    let planar = dl.format.is_planar();
    let dst_row = if planar { w * 3 / 2 } else { dl.row_bytes() };
    let row_bytes = src_row_bytes + dst_row;
    let band = band_rows(row_bytes * h, row_bytes, h, opts.threads, planar);
    let stride = dl.stride;
    let data = &mut *dst.data;
    let mut bands = Vec::new();
    let y_starts = (0..h).step_by(band);
    match dl.format {
        PixelFormat::Nv12 => {
            let (yp, rest) = data.split_at_mut(stride * h);
            let uv = &mut rest[..stride * h / 2];
            let ys = split_rows(yp, stride, band, h);
            let uvs = split_rows(uv, stride, band / 2, h / 2);
            for ((y0, yb), cb) in y_starts.zip(ys).zip(uvs) {
                let rows = band.min(h - y0);
                bands.push(Band {
                    y0,
                    rows,
                    out: BandOut::Nv12(yb, cb),
                });
            }
        }
        PixelFormat::I420 => {
            let cs = stride / 2;
            let (yp, rest) = data.split_at_mut(stride * h);
            let (u, rest) = rest.split_at_mut(cs * h / 2);
            let v = &mut rest[..cs * h / 2];
            let ys = split_rows(yp, stride, band, h);
            let us = split_rows(u, cs, band / 2, h / 2);
            let vs = split_rows(v, cs, band / 2, h / 2);
            for (((y0, yb), ub), vb) in y_starts.zip(ys).zip(us).zip(vs) {
                let rows = band.min(h - y0);
                bands.push(Band {
                    y0,
                    rows,
                    out: BandOut::I420(yb, ub, vb),
                });
            }
        }
        _ => {
            for (y0, b) in y_starts.zip(split_rows(data, stride, band, h)) {
                let rows = band.min(h - y0);
                bands.push(Band {
                    y0,
                    rows,
                    out: BandOut::Packed(b),
                });
            }
        }
    }
    let drow = dl.row_bytes();
    for_each(opts.threads, bands, |b| {
        let mut tmp = vec![0u8; if plan.steps.len() > 1 { w * 8 } else { 0 }];
        let mut s = rows.scratch();
        let mut buf = vec![0u8; rows.row_bytes()];
        match b.out {
            BandOut::Packed(out) => {
                for r in 0..b.rows {
                    if stop.now() {
                        return;
                    }
                    let d = &mut out[r * stride..r * stride + drow];
                    let sr = rows.row(b.y0 + r, &mut buf, &mut s);
                    run_steps(k, plan, sr, d, &mut tmp, w);
                }
            }
            BandOut::Nv12(yb, cb) => {
                let planes = Planes::Nv12(cb);
                yuv_band(
                    k, plan, rows, &mut s, b.y0, b.rows, yb, stride, planes, w, &mut tmp, stop,
                )
            }
            BandOut::I420(yb, ub, vb) => {
                let planes = Planes::I420(ub, vb);
                yuv_band(
                    k, plan, rows, &mut s, b.y0, b.rows, yb, stride, planes, w, &mut tmp, stop,
                )
            }
        }
    })?;
    stop.result()
}

/// Convert `src` into `dst` (same width and height; any supported formats,
/// any strides). Writes only the pixel bytes of `dst`'s rows, never its padding.
pub fn convert(src: &ImageRef<'_>, dst: &mut ImageMut<'_>, opts: &Options) -> Result<()> {
    convert_with(src, dst, opts, None)
}

/// [`convert`] that stops with [`KernelError::Cancelled`] once `cancel` is set
/// (checked before every row; `dst` is then partly written). With `cancel`
/// never set the output is identical to [`convert`]'s.
pub fn convert_cancellable(
    src: &ImageRef<'_>,
    dst: &mut ImageMut<'_>,
    opts: &Options,
    cancel: &AtomicBool,
) -> Result<()> {
    convert_with(src, dst, opts, Some(cancel))
}

pub(crate) fn convert_with(
    src: &ImageRef<'_>,
    dst: &mut ImageMut<'_>,
    opts: &Options,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    let (sl, dl) = (*src.layout(), *dst.layout());
    if (sl.width, sl.height) != (dl.width, dl.height) {
        return Err(KernelError::SizeMismatch {
            sw: sl.width,
            sh: sl.height,
            dw: dl.width,
            dh: dl.height,
        });
    }
    let plan = plan(sl.format, dl.format, opts.matrix, opts.range)?;
    drive(&Identity(src), &plan, dst, sl.row_bytes(), opts, cancel)
}

/// One band's chroma plane(s).
enum Planes<'a> {
    Nv12(&'a mut [u8]),
    I420(&'a mut [u8], &'a mut [u8]),
}

impl Planes<'_> {
    /// Chroma row `r` of the band (`stride`: the luma stride).
    fn row(&mut self, r: usize, stride: usize, w: usize) -> Chroma<'_> {
        match self {
            Planes::Nv12(uv) => Chroma::Nv12(&mut uv[r * stride..r * stride + w]),
            Planes::I420(u, v) => {
                let cs = stride / 2;
                Chroma::I420(
                    &mut u[r * cs..r * cs + w / 2],
                    &mut v[r * cs..r * cs + w / 2],
                )
            }
        }
    }
}

/// Convert one band of row pairs to YUV 4:2:0.
#[allow(clippy::too_many_arguments)]
fn yuv_band<R: Rows>(
    k: &Kernels,
    plan: &Plan,
    rows_src: &R,
    s: &mut R::Scratch,
    y0: usize,
    rows: usize,
    yb: &mut [u8],
    stride: usize,
    mut chroma: Planes<'_>,
    w: usize,
    tmp: &mut [u8],
    stop: &Stop<'_>,
) {
    let spec = plan.yuv.as_ref().expect("planar plan has a YUV step");
    let pre = !plan.steps.is_empty();
    let rb = if pre {
        w * plan.widths.last().copied().unwrap_or(4)
    } else {
        0
    };
    let (mut a, mut b) = (vec![0u8; rb], vec![0u8; rb]);
    let (mut b0, mut b1) = (
        vec![0u8; rows_src.row_bytes()],
        vec![0u8; rows_src.row_bytes()],
    );
    for r in (0..rows).step_by(2) {
        if stop.now() {
            return;
        }
        let s0 = rows_src.row(y0 + r, &mut b0, s);
        let s1 = rows_src.row(y0 + r + 1, &mut b1, s);
        let (s0, s1): (&[u8], &[u8]) = if pre {
            run_steps(k, plan, s0, &mut a, tmp, w);
            run_steps(k, plan, s1, &mut b, tmp, w);
            (&a, &b)
        } else {
            (s0, s1)
        };
        let (top, bottom) = yb[r * stride..].split_at_mut(stride);
        // SAFETY: as in `run_step`: the table was checked by `simd::kernels`.
        unsafe {
            (k.yuv)(
                spec,
                s0,
                s1,
                &mut top[..w],
                &mut bottom[..w],
                chroma.row(r / 2, stride, w),
                w,
            )
        };
    }
}
