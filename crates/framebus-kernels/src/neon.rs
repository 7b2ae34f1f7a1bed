//! NEON kernels (aarch64): byte shuffles, luma, YUV 4:2:0 and the 8 ↔ 16-bit
//! sample conversions (the 2×2 box uses the scalar kernel). `vld3`/`vld4`
//! deinterleave 16 pixels into channel registers; the arithmetic is the same
//! exact integer arithmetic as `scalar` (widening multiply-accumulate in i32,
//! arithmetic shift, saturating narrows = the scalar clamp). Only reachable
//! through the NEON kernel table in `simd`, built after
//! `is_aarch64_feature_detected!("neon")`.

use crate::scalar::{self, Chroma};
use crate::spec::{LumaSpec, ShufSpec, YuvSpec};
use std::arch::aarch64::*;

/// 16 pixels' first three channels (byte positions 0, 1, 2).
///
/// # Safety
/// `p .. p + 16 * sb` must be readable; `sb` is 3 or 4.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load16(p: *const u8, sb: usize) -> [uint8x16_t; 3] {
    // SAFETY: forwarded to the caller.
    unsafe {
        if sb == 4 {
            let v = vld4q_u8(p);
            [v.0, v.1, v.2]
        } else {
            let v = vld3q_u8(p);
            [v.0, v.1, v.2]
        }
    }
}

/// Widen the low (`hi = false`) or high 8 bytes to i16.
#[target_feature(enable = "neon")]
#[inline]
fn widen(v: uint8x16_t, hi: bool) -> int16x8_t {
    let w = if hi {
        vmovl_high_u8(v)
    } else {
        vmovl_u8(vget_low_u8(v))
    };
    vreinterpretq_s16_u16(w)
}

/// `k · c` for 8 lanes of three i16 channels, as two i32x4 halves.
#[target_feature(enable = "neon")]
#[inline]
fn dot8(c: [int16x8_t; 3], k: &[i16; 4]) -> [int32x4_t; 2] {
    let lo = vmlal_n_s16(
        vmlal_n_s16(
            vmull_n_s16(vget_low_s16(c[0]), k[0]),
            vget_low_s16(c[1]),
            k[1],
        ),
        vget_low_s16(c[2]),
        k[2],
    );
    let hi = vmlal_high_n_s16(
        vmlal_high_n_s16(vmull_high_n_s16(c[0], k[0]), c[1], k[1]),
        c[2],
        k[2],
    );
    [lo, hi]
}

/// `(d + add) >> 15` for 16 lanes, saturated to bytes.
#[target_feature(enable = "neon")]
#[inline]
fn narrow_y(d: [int32x4_t; 4], add: int32x4_t) -> uint8x16_t {
    let s = |v| vshrq_n_s32::<15>(vaddq_s32(v, add));
    let a = vcombine_s16(vqmovn_s32(s(d[0])), vqmovn_s32(s(d[1])));
    let b = vcombine_s16(vqmovn_s32(s(d[2])), vqmovn_s32(s(d[3])));
    vcombine_u8(vqmovun_s16(a), vqmovun_s16(b))
}

/// Luma of 16 pixels.
#[target_feature(enable = "neon")]
#[inline]
fn y16(ch: [uint8x16_t; 3], k: &[i16; 4], add: int32x4_t) -> uint8x16_t {
    let lo = dot8(ch.map(|c| widen(c, false)), k);
    let hi = dot8(ch.map(|c| widen(c, true)), k);
    narrow_y([lo[0], lo[1], hi[0], hi[1]], add)
}

/// See [`crate::scalar::luma`]: 16 pixels a step.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn luma(spec: &LumaSpec, src: &[u8], dst: &mut [u8], w: usize) {
    let sb = spec.sbpp;
    assert!(src.len() >= w * sb && dst.len() >= w, "luma: short row");
    let add = vdupq_n_s32(spec.add);
    let mut x = 0;
    while x + 16 <= w {
        // SAFETY: reads `16 · sb` bytes from `x · sb` and writes 16 from `x`,
        // inside the asserted lengths per the loop condition.
        unsafe {
            let ch = load16(src.as_ptr().add(x * sb), sb);
            vst1q_u8(dst.as_mut_ptr().add(x), y16(ch, &spec.k, add));
        }
        x += 16;
    }
    scalar::luma(spec, &src[x * sb..], &mut dst[x..], w - x);
}

/// Chroma of 8 2×2 blocks from two rows of 16 pixels: `(k · S + add) >> 17`.
#[target_feature(enable = "neon")]
#[inline]
fn chroma8(s: [int16x8_t; 3], k: &[i16; 4], add: int32x4_t) -> uint8x8_t {
    let d = dot8(s, k);
    let r = |v| vshrq_n_s32::<17>(vaddq_s32(v, add));
    vqmovun_s16(vcombine_s16(vqmovn_s32(r(d[0])), vqmovn_s32(r(d[1]))))
}

/// See [`crate::scalar::yuv`]: 16 pixels of two rows a step.
///
/// # Safety
/// The CPU must support NEON.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
pub unsafe fn yuv(
    spec: &YuvSpec,
    s0: &[u8],
    s1: &[u8],
    y0: &mut [u8],
    y1: &mut [u8],
    mut c: Chroma<'_>,
    w: usize,
) {
    let sb = spec.sbpp;
    scalar::check_yuv_rows(sb, s0, s1, y0, y1, &c, w);
    let (ya, ca) = (vdupq_n_s32(spec.y_add), vdupq_n_s32(spec.c_add));
    let mut x = 0;
    while x + 16 <= w {
        // SAFETY: reads `16 · sb` bytes of each source row from `x · sb`, writes
        // 16 luma bytes of each row from `x`, 16 NV12 bytes from `x` or 8 I420
        // bytes from `x / 2` — all inside the lengths `check_yuv_rows` checked.
        unsafe {
            let a = load16(s0.as_ptr().add(x * sb), sb);
            let b = load16(s1.as_ptr().add(x * sb), sb);
            vst1q_u8(y0.as_mut_ptr().add(x), y16(a, &spec.ky, ya));
            vst1q_u8(y1.as_mut_ptr().add(x), y16(b, &spec.ky, ya));
            // per channel: rows added (u16), then adjacent pixels added → 8 blocks
            let sum = |i: usize| {
                let lo = vaddl_u8(vget_low_u8(a[i]), vget_low_u8(b[i]));
                let hi = vaddl_high_u8(a[i], b[i]);
                vreinterpretq_s16_u16(vpaddq_u16(lo, hi))
            };
            let s = [sum(0), sum(1), sum(2)];
            let (u, v) = (chroma8(s, &spec.ku, ca), chroma8(s, &spec.kv, ca));
            match &mut c {
                Chroma::Nv12(uv) => vst2_u8(uv.as_mut_ptr().add(x), uint8x8x2_t(u, v)),
                Chroma::I420(cu, cv) => {
                    vst1_u8(cu.as_mut_ptr().add(x / 2), u);
                    vst1_u8(cv.as_mut_ptr().add(x / 2), v);
                }
            }
        }
        x += 16;
    }
    scalar::yuv(
        spec,
        &s0[x * sb..],
        &s1[x * sb..],
        &mut y0[x..],
        &mut y1[x..],
        c.skip(x / 2),
        w - x,
    );
}

/// See [`crate::scalar::shuffle`]: 4 pixels a step through `tbl`.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn shuffle(spec: &ShufSpec, src: &[u8], dst: &mut [u8], w: usize) {
    let (sb, db) = (spec.sbpp, spec.dbpp);
    let (sl, dl) = (w * sb, w * db);
    assert!(src.len() >= sl && dst.len() >= dl, "shuffle: short row");
    let (m, f) = spec.table4();
    // SAFETY: both arrays are 16 readable bytes.
    let (mask, fill) = unsafe { (vld1q_u8(m.as_ptr()), vld1q_u8(f.as_ptr())) };
    let mut x = 0;
    while x * sb + 16 <= sl && x * db + 16 <= dl {
        // SAFETY: the loop condition keeps the 16-byte load and store inside
        // `src[..sl]` and `dst[..dl]`, whose lengths were asserted above.
        unsafe {
            let v = vld1q_u8(src.as_ptr().add(x * sb));
            vst1q_u8(
                dst.as_mut_ptr().add(x * db),
                vorrq_u8(vqtbl1q_u8(v, mask), fill),
            );
        }
        x += 4;
    }
    scalar::shuffle(spec, &src[x * sb..], &mut dst[x * db..], w - x);
}

/// See [`crate::scalar::u16_to_u8`]: `vaddhn(v · 255, 32895)` is exactly
/// `(v · 255 + 32895) >> 16`.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn u16_to_u8(src: &[u8], dst: &mut [u8], n: usize) {
    assert!(src.len() >= 2 * n && dst.len() >= n, "u16_to_u8: short row");
    let k = vdupq_n_u32(32895);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: reads 16 bytes from `2 * i` (≤ 2n) and writes 8 from `i` (≤ n).
        unsafe {
            let v = vreinterpretq_u16_u8(vld1q_u8(src.as_ptr().add(2 * i)));
            let lo = vaddhn_u32(vmull_n_u16(vget_low_u16(v), 255), k);
            let hi = vaddhn_u32(vmull_n_u16(vget_high_u16(v), 255), k);
            vst1_u8(dst.as_mut_ptr().add(i), vmovn_u16(vcombine_u16(lo, hi)));
        }
        i += 8;
    }
    scalar::u16_to_u8(&src[2 * i..], &mut dst[i..], n - i);
}

/// See [`crate::scalar::u8_to_u16`]: each byte doubled is `v · 257` little-endian.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn u8_to_u16(src: &[u8], dst: &mut [u8], n: usize) {
    assert!(src.len() >= n && dst.len() >= 2 * n, "u8_to_u16: short row");
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: reads 16 bytes from `i` (≤ n) and writes 32 from `2 * i` (≤ 2n).
        unsafe {
            let v = vld1q_u8(src.as_ptr().add(i));
            vst1q_u8(dst.as_mut_ptr().add(2 * i), vzip1q_u8(v, v));
            vst1q_u8(dst.as_mut_ptr().add(2 * i + 16), vzip2q_u8(v, v));
        }
        i += 16;
    }
    scalar::u8_to_u16(&src[i..], &mut dst[2 * i..], n - i);
}
