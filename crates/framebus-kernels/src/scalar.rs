//! Portable scalar row kernels: the reference every SIMD variant must match
//! byte for byte, and the tail handler the SIMD loops call for the last few
//! pixels of a row. Pure safe Rust over slices.
//!
//! Used by `simd` (the scalar kernel table), `x86_*`/`neon` (tails) and tests.

use crate::spec::{LumaSpec, ShufSpec, YuvSpec, C_SHIFT, FILL, Y_SHIFT};

/// Where a YUV kernel writes the chroma of one row pair.
#[derive(Debug)]
pub enum Chroma<'a> {
    /// NV12: one row of interleaved U, V (`width` bytes).
    Nv12(&'a mut [u8]),
    /// I420: one row of U and one of V (`width / 2` bytes each).
    I420(&'a mut [u8], &'a mut [u8]),
}

impl Chroma<'_> {
    /// The same destination starting `blocks` 2×2 blocks further on (SIMD tails).
    pub(crate) fn skip(&mut self, blocks: usize) -> Chroma<'_> {
        match self {
            Chroma::Nv12(uv) => Chroma::Nv12(&mut uv[2 * blocks..]),
            Chroma::I420(u, v) => Chroma::I420(&mut u[blocks..], &mut v[blocks..]),
        }
    }
}

/// Panic unless two `sb`-byte-pixel source rows, two luma rows and the chroma
/// destination all hold `w` pixels (`w` even): the SIMD YUV kernels' raw loads
/// and stores are in bounds only after this check.
pub(crate) fn check_yuv_rows(
    sb: usize,
    s0: &[u8],
    s1: &[u8],
    y0: &[u8],
    y1: &[u8],
    c: &Chroma<'_>,
    w: usize,
) {
    assert!(w.is_multiple_of(2), "yuv: odd width");
    assert!(
        s0.len() >= w * sb && s1.len() >= w * sb,
        "yuv: short source row"
    );
    assert!(y0.len() >= w && y1.len() >= w, "yuv: short luma row");
    match c {
        Chroma::Nv12(uv) => assert!(uv.len() >= w, "yuv: short chroma row"),
        Chroma::I420(u, v) => assert!(
            u.len() >= w / 2 && v.len() >= w / 2,
            "yuv: short chroma row"
        ),
    }
}

fn shuffle_n<const SB: usize, const DB: usize>(map: [u8; 4], src: &[u8], dst: &mut [u8], w: usize) {
    let fill: [bool; 4] = map.map(|m| m == FILL);
    let idx: [usize; 4] = map.map(|m| if m == FILL { 0 } else { m as usize });
    for (s, d) in src[..w * SB]
        .chunks_exact(SB)
        .zip(dst[..w * DB].chunks_exact_mut(DB))
    {
        for i in 0..DB {
            d[i] = if fill[i] { 255 } else { s[idx[i]] };
        }
    }
}

/// Reorder/expand/drop bytes of `w` pixels as `spec` says.
pub fn shuffle(spec: &ShufSpec, src: &[u8], dst: &mut [u8], w: usize) {
    match (spec.sbpp, spec.dbpp) {
        (4, 4) => shuffle_n::<4, 4>(spec.map, src, dst, w),
        (4, 3) => shuffle_n::<4, 3>(spec.map, src, dst, w),
        (3, 4) => shuffle_n::<3, 4>(spec.map, src, dst, w),
        (3, 3) => shuffle_n::<3, 3>(spec.map, src, dst, w),
        (1, 4) => shuffle_n::<1, 4>(spec.map, src, dst, w),
        (1, 3) => shuffle_n::<1, 3>(spec.map, src, dst, w),
        (s, d) => unreachable!("no shuffle from {s} to {d} bytes a pixel"),
    }
}

#[inline(always)]
fn dot(k: &[i16; 4], p: &[u8]) -> i32 {
    p.iter().zip(k).map(|(&p, &k)| p as i32 * k as i32).sum()
}

#[inline(always)]
fn to_u8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Luma of `w` pixels: `clamp((k·p + add) >> 15, 0, 255)`.
pub fn luma(spec: &LumaSpec, src: &[u8], dst: &mut [u8], w: usize) {
    let sb = spec.sbpp;
    for (p, d) in src[..w * sb].chunks_exact(sb).zip(&mut dst[..w]) {
        *d = to_u8((dot(&spec.k, p) + spec.add) >> Y_SHIFT);
    }
}

/// Native-endian 16-bit samples to 8 bits, rounding to nearest: `(v + 128) / 257`,
/// computed as `(v * 255 + 32895) >> 16` (identical for every u16, see tests).
pub fn u16_to_u8(src: &[u8], dst: &mut [u8], n: usize) {
    for (s, d) in src[..2 * n].chunks_exact(2).zip(&mut dst[..n]) {
        let v = u16::from_ne_bytes([s[0], s[1]]) as u32;
        *d = ((v * 255 + 32895) >> 16) as u8;
    }
}

/// 8-bit samples to native-endian 16 bits: `v * 257` (0 → 0, 255 → 65535).
pub fn u8_to_u16(src: &[u8], dst: &mut [u8], n: usize) {
    for (&s, d) in src[..n].iter().zip(dst[..2 * n].chunks_exact_mut(2)) {
        d.copy_from_slice(&(s as u16 * 257).to_ne_bytes());
    }
}

/// Two source rows → two Y rows and one chroma row (`w` even).
pub fn yuv(
    spec: &YuvSpec,
    s0: &[u8],
    s1: &[u8],
    y0: &mut [u8],
    y1: &mut [u8],
    mut c: Chroma<'_>,
    w: usize,
) {
    let sb = spec.sbpp;
    for bx in 0..w / 2 {
        let x = 2 * bx;
        let p = [
            &s0[x * sb..(x + 1) * sb],
            &s0[(x + 1) * sb..(x + 2) * sb],
            &s1[x * sb..(x + 1) * sb],
            &s1[(x + 1) * sb..(x + 2) * sb],
        ];
        y0[x] = to_u8((dot(&spec.ky, p[0]) + spec.y_add) >> Y_SHIFT);
        y0[x + 1] = to_u8((dot(&spec.ky, p[1]) + spec.y_add) >> Y_SHIFT);
        y1[x] = to_u8((dot(&spec.ky, p[2]) + spec.y_add) >> Y_SHIFT);
        y1[x + 1] = to_u8((dot(&spec.ky, p[3]) + spec.y_add) >> Y_SHIFT);
        let mut sum = [0u8; 4].map(|_| 0i32);
        for q in p {
            for (i, &b) in q.iter().enumerate() {
                sum[i] += b as i32;
            }
        }
        let ds = |k: &[i16; 4]| -> i32 { (0..4).map(|i| sum[i] * k[i] as i32).sum() };
        let u = to_u8((ds(&spec.ku) + spec.c_add) >> C_SHIFT);
        let v = to_u8((ds(&spec.kv) + spec.c_add) >> C_SHIFT);
        match &mut c {
            Chroma::Nv12(uv) => {
                uv[2 * bx] = u;
                uv[2 * bx + 1] = v;
            }
            Chroma::I420(cu, cv) => {
                cu[bx] = u;
                cv[bx] = v;
            }
        }
    }
}

/// 2×2 box average of two rows of 4-byte pixels into `w` pixels:
/// `(a + b + c + d + 2) >> 2` per byte.
pub fn box2_4(r0: &[u8], r1: &[u8], out: &mut [u8], w: usize) {
    for ((o, a), b) in out[..4 * w]
        .chunks_exact_mut(4)
        .zip(r0[..8 * w].chunks_exact(8))
        .zip(r1[..8 * w].chunks_exact(8))
    {
        for c in 0..4 {
            let s = a[c] as u16 + a[4 + c] as u16 + b[c] as u16 + b[4 + c] as u16;
            o[c] = ((s + 2) >> 2) as u8;
        }
    }
}

/// 16-bit RGBA → 16-bit luma, full-range BT.601 (same weights as GRAY8):
/// `(9798 R + 19234 G + 3736 B + 16384) >> 15`.
pub fn luma16(src: &[u8], dst: &mut [u8], w: usize) {
    for (p, d) in src[..8 * w]
        .chunks_exact(8)
        .zip(dst[..2 * w].chunks_exact_mut(2))
    {
        let s = |i: usize| u16::from_ne_bytes([p[2 * i], p[2 * i + 1]]) as u32;
        let y = (9798 * s(0) + 19234 * s(1) + 3736 * s(2) + 16384) >> 15;
        d.copy_from_slice(&(y as u16).to_ne_bytes());
    }
}

/// 16-bit luma → 16-bit RGBA (grey, alpha 65535).
pub fn gray16_to_rgba16(src: &[u8], dst: &mut [u8], w: usize) {
    for (s, d) in src[..2 * w]
        .chunks_exact(2)
        .zip(dst[..8 * w].chunks_exact_mut(8))
    {
        d[..2].copy_from_slice(s);
        d[2..4].copy_from_slice(s);
        d[4..6].copy_from_slice(s);
        d[6..8].copy_from_slice(&[0xff, 0xff]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u16_rounding_is_exact_nearest_and_round_trips() {
        let mut out = [0u8; 1];
        for v in 0..=65535u32 {
            u16_to_u8(&(v as u16).to_ne_bytes(), &mut out, 1);
            assert_eq!(out[0] as u32, (v + 128) / 257, "v={v}");
        }
        for v in 0..=255u8 {
            let mut w = [0u8; 2];
            u8_to_u16(&[v], &mut w, 1);
            assert_eq!(u16::from_ne_bytes(w), v as u16 * 257);
            u16_to_u8(&w, &mut out, 1);
            assert_eq!(out[0], v);
        }
    }
}
