//! AVX2 kernels (x86-64): two 128-bit lanes per register, lane 1 working on
//! the chunk of pixels after lane 0's. The lane helpers below are what
//! `x86_kernels!` (x86_body.rs) is written against; they restore pixel order
//! when storing. Only reachable through the AVX2 kernel table in `simd`, which
//! is built after `is_x86_feature_detected!("avx2")`.

use crate::scalar::{self, Chroma};
use crate::spec::{LumaSpec, ShufSpec, YuvSpec};
use std::arch::x86_64::*;

type V = __m256i;
const LANES: usize = 2;
/// Bytes `st3` writes (24 of them meaningful).
const ST3_BYTES: usize = 32;

macro_rules! op {
    ($name:ident($($a:ident),*) => $e:expr) => {
        #[target_feature(enable = "avx2")]
        #[inline]
        fn $name($($a: V),*) -> V {
            $e
        }
    };
}
op!(zero() => _mm256_setzero_si256());
op!(shufb(a, m) => _mm256_shuffle_epi8(a, m));
op!(or(a, b) => _mm256_or_si256(a, b));
op!(unpacklo8(a, b) => _mm256_unpacklo_epi8(a, b));
op!(unpackhi8(a, b) => _mm256_unpackhi_epi8(a, b));
op!(add16(a, b) => _mm256_add_epi16(a, b));
op!(add32(a, b) => _mm256_add_epi32(a, b));
op!(madd16(a, b) => _mm256_madd_epi16(a, b));
op!(hadd32(a, b) => _mm256_hadd_epi32(a, b));
op!(srai_y(a) => _mm256_srai_epi32::<15>(a));
op!(srai_c(a) => _mm256_srai_epi32::<17>(a));
op!(packs32(a, b) => _mm256_packs_epi32(a, b));
op!(packus16(a, b) => _mm256_packus_epi16(a, b));
op!(mulhi_u16(a, b) => _mm256_mulhi_epu16(a, b));
op!(mullo16(a, b) => _mm256_mullo_epi16(a, b));
op!(subs_u16(a, b) => _mm256_subs_epu16(a, b));
op!(unpacklo64(a, b) => _mm256_unpacklo_epi64(a, b));
op!(unpackhi64(a, b) => _mm256_unpackhi_epi64(a, b));
op!(srli16_2(a) => _mm256_srli_epi16::<2>(a));
op!(cmpeq16(a, b) => _mm256_cmpeq_epi16(a, b));

/// The same 128 bits in both lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn bcast(a: __m128i) -> V {
    _mm256_broadcastsi128_si256(a)
}

#[target_feature(enable = "avx2")]
#[inline]
fn splat32(x: i32) -> V {
    _mm256_set1_epi32(x)
}

#[target_feature(enable = "avx2")]
#[inline]
fn splat16(x: i16) -> V {
    _mm256_set1_epi16(x)
}

/// Lane 0 from `p`, lane 1 from `p + step` (16 bytes each).
///
/// # Safety
/// `p .. p + 16` and `p + step .. p + step + 16` must be readable.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn ld(p: *const u8, step: usize) -> V {
    // SAFETY: forwarded to the caller; unaligned loads.
    unsafe {
        let lo = _mm_loadu_si128(p.cast());
        let hi = _mm_loadu_si128(p.add(step).cast());
        _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi)
    }
}

/// Load 32 contiguous bytes (= `ld(p, 16)` in one instruction).
///
/// # Safety
/// `p .. p + 32` must be readable.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn ld_contig(p: *const u8) -> V {
    // SAFETY: forwarded to the caller; unaligned load.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// Store 32 bytes (lane 0 then lane 1).
///
/// # Safety
/// `p .. p + 32` must be writable.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn st(p: *mut u8, v: V) {
    // SAFETY: forwarded to the caller; unaligned store.
    unsafe { _mm256_storeu_si256(p.cast(), v) }
}

/// Store the first 12 bytes of each lane contiguously (writes 32 bytes).
///
/// # Safety
/// `p .. p + ST3_BYTES` must be writable.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn st3(p: *mut u8, v: V) {
    let packed = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 7, 7));
    // SAFETY: forwarded to the caller.
    unsafe { _mm256_storeu_si256(p.cast(), packed) }
}

/// Store the first 12 bytes of each lane of `a`, `b`, `c`, `d` contiguously
/// (a.lane0, a.lane1, b.lane0, ... = 96 bytes) with three full stores.
///
/// # Safety
/// `p .. p + 96` must be writable, and `p` 32-byte aligned when `nt`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn st3x4(p: *mut u8, a: V, b: V, c: V, d: V, nt: bool) {
    // Meaningful dwords are 0, 1, 2 (lane 0) and 4, 5, 6 (lane 1) of each input.
    let i = |v: [i32; 8]| _mm256_setr_epi32(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
    let pv = _mm256_permutevar8x32_epi32;
    let o0 = _mm256_blend_epi32::<0xC0>(
        pv(a, i([0, 1, 2, 4, 5, 6, 0, 0])),
        pv(b, i([0, 0, 0, 0, 0, 0, 0, 1])),
    );
    let o1 = _mm256_blend_epi32::<0xF0>(
        pv(b, i([2, 4, 5, 6, 0, 0, 0, 0])),
        pv(c, i([0, 0, 0, 0, 0, 1, 2, 4])),
    );
    let o2 = _mm256_blend_epi32::<0xFC>(
        pv(c, i([5, 6, 0, 0, 0, 0, 0, 0])),
        pv(d, i([0, 0, 0, 1, 2, 4, 5, 6])),
    );
    // SAFETY: forwarded to the caller (and `p` 32-aligned when `nt`).
    unsafe {
        if nt {
            _mm256_stream_si256(p.cast(), o0);
            _mm256_stream_si256(p.add(32).cast(), o1);
            _mm256_stream_si256(p.add(64).cast(), o2);
        } else {
            _mm256_storeu_si256(p.cast(), o0);
            _mm256_storeu_si256(p.add(32).cast(), o1);
            _mm256_storeu_si256(p.add(64).cast(), o2);
        }
    }
}

/// Streaming (non-temporal) store of 32 bytes.
///
/// # Safety
/// `p .. p + 32` must be writable and `p` 32-byte aligned.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn st_nt(p: *mut u8, v: V) {
    // SAFETY: forwarded to the caller.
    unsafe { _mm256_stream_si256(p.cast(), v) }
}

/// Store the low 8 bytes of each lane contiguously (16 bytes).
///
/// # Safety
/// `p .. p + 16` must be writable.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn st_lo64(p: *mut u8, v: V) {
    let q = _mm256_permute4x64_epi64::<0b00_00_10_00>(v);
    // SAFETY: forwarded to the caller.
    unsafe { _mm_storeu_si128(p.cast(), _mm256_castsi256_si128(q)) }
}

/// Store lane 0 of `lo`, lane 0 of `hi`, lane 1 of `lo`, lane 1 of `hi` (64 bytes).
///
/// # Safety
/// `p .. p + 64` must be writable.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn st_pair(p: *mut u8, lo: V, hi: V) {
    let a = _mm256_permute2x128_si256::<0x20>(lo, hi);
    let b = _mm256_permute2x128_si256::<0x31>(lo, hi);
    // SAFETY: forwarded to the caller.
    unsafe {
        _mm256_storeu_si256(p.cast(), a);
        _mm256_storeu_si256(p.add(32).cast(), b);
    }
}

x86_kernels!("avx2");
