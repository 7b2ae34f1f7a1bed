//! NEON kernels (aarch64): the byte shuffles and the 8 ↔ 16-bit sample
//! conversions. Luma and YUV use the scalar kernels on aarch64 for now (see
//! docs/kernels.md). Only reachable through the NEON kernel table in `simd`,
//! built after `is_aarch64_feature_detected!("neon")`.

use crate::scalar;
use crate::spec::{ShufSpec, FILL};
use std::arch::aarch64::*;

/// See [`crate::scalar::shuffle`]: 4 pixels a step through `tbl`.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub unsafe fn shuffle(spec: &ShufSpec, src: &[u8], dst: &mut [u8], w: usize) {
    let (sb, db) = (spec.sbpp, spec.dbpp);
    let (sl, dl) = (w * sb, w * db);
    assert!(src.len() >= sl && dst.len() >= dl, "shuffle: short row");
    let mut m = [0x80u8; 16];
    let mut f = [0u8; 16];
    for i in 0..4 {
        for c in 0..db {
            if spec.map[c] == FILL {
                f[i * db + c] = 255;
            } else {
                m[i * db + c] = (i * sb) as u8 + spec.map[c];
            }
        }
    }
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
