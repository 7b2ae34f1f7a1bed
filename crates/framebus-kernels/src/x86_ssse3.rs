//! SSSE3 kernels (x86-64): one 128-bit lane per register. The lane helpers
//! below are what `x86_kernels!` (x86_body.rs) is written against; the kernels
//! themselves are expanded at the bottom. Only reachable through the SSSE3
//! kernel table in `simd`, which is built after `is_x86_feature_detected!`.

use crate::scalar::{self, Chroma};
use crate::spec::{LumaSpec, ShufSpec, YuvSpec};
use std::arch::x86_64::*;

type V = __m128i;
const LANES: usize = 1;
/// Bytes `st3` writes (12 of them meaningful).
const ST3_BYTES: usize = 16;

macro_rules! op {
    ($name:ident($($a:ident),*) => $e:expr) => {
        #[target_feature(enable = "ssse3")]
        #[inline]
        fn $name($($a: V),*) -> V {
            $e
        }
    };
}
op!(zero() => _mm_setzero_si128());
op!(shufb(a, m) => _mm_shuffle_epi8(a, m));
op!(or(a, b) => _mm_or_si128(a, b));
op!(unpacklo8(a, b) => _mm_unpacklo_epi8(a, b));
op!(unpackhi8(a, b) => _mm_unpackhi_epi8(a, b));
op!(add16(a, b) => _mm_add_epi16(a, b));
op!(add32(a, b) => _mm_add_epi32(a, b));
op!(madd16(a, b) => _mm_madd_epi16(a, b));
op!(hadd32(a, b) => _mm_hadd_epi32(a, b));
op!(srai_y(a) => _mm_srai_epi32::<15>(a));
op!(srai_c(a) => _mm_srai_epi32::<17>(a));
op!(packs32(a, b) => _mm_packs_epi32(a, b));
op!(packus16(a, b) => _mm_packus_epi16(a, b));
op!(mulhi_u16(a, b) => _mm_mulhi_epu16(a, b));
op!(mullo16(a, b) => _mm_mullo_epi16(a, b));
op!(subs_u16(a, b) => _mm_subs_epu16(a, b));
op!(unpacklo64(a, b) => _mm_unpacklo_epi64(a, b));
op!(unpackhi64(a, b) => _mm_unpackhi_epi64(a, b));
op!(srli16_2(a) => _mm_srli_epi16::<2>(a));
op!(cmpeq16(a, b) => _mm_cmpeq_epi16(a, b));
op!(bcast(a) => a);

#[target_feature(enable = "ssse3")]
#[inline]
fn splat32(x: i32) -> V {
    _mm_set1_epi32(x)
}

#[target_feature(enable = "ssse3")]
#[inline]
fn splat16(x: i16) -> V {
    _mm_set1_epi16(x)
}

/// Load 16 bytes.
///
/// # Safety
/// `p .. p + 16` must be readable.
#[target_feature(enable = "ssse3")]
#[inline]
unsafe fn ld(p: *const u8, _step: usize) -> V {
    // SAFETY: forwarded to the caller; unaligned load.
    unsafe { _mm_loadu_si128(p.cast()) }
}

/// Load 16 contiguous bytes (the same as `ld` with one lane).
///
/// # Safety
/// `p .. p + 16` must be readable.
#[target_feature(enable = "ssse3")]
#[inline]
unsafe fn ld_contig(p: *const u8) -> V {
    // SAFETY: forwarded to the caller; unaligned load.
    unsafe { _mm_loadu_si128(p.cast()) }
}

/// Store 16 bytes.
///
/// # Safety
/// `p .. p + 16` must be writable.
#[target_feature(enable = "ssse3")]
#[inline]
unsafe fn st(p: *mut u8, v: V) {
    // SAFETY: forwarded to the caller; unaligned store.
    unsafe { _mm_storeu_si128(p.cast(), v) }
}

/// Store the 12 meaningful bytes of a 3-byte-pixel result (writes 16).
///
/// # Safety
/// `p .. p + ST3_BYTES` must be writable.
#[target_feature(enable = "ssse3")]
#[inline]
unsafe fn st3(p: *mut u8, v: V) {
    // SAFETY: forwarded to the caller.
    unsafe { _mm_storeu_si128(p.cast(), v) }
}

/// Store the first 12 bytes of `a`, `b`, `c`, `d` contiguously (48 bytes).
///
/// # Safety
/// `p .. p + 48` must be writable, and `p` 16-byte aligned when `nt`.
#[target_feature(enable = "ssse3")]
#[inline]
unsafe fn st3x4(p: *mut u8, a: V, b: V, c: V, d: V, nt: bool) {
    let o0 = _mm_or_si128(a, _mm_slli_si128::<12>(b));
    let o1 = _mm_or_si128(_mm_srli_si128::<4>(b), _mm_slli_si128::<8>(c));
    let o2 = _mm_or_si128(_mm_srli_si128::<8>(c), _mm_slli_si128::<4>(d));
    // SAFETY: forwarded to the caller (and `p` 16-aligned when `nt`).
    unsafe {
        if nt {
            _mm_stream_si128(p.cast(), o0);
            _mm_stream_si128(p.add(16).cast(), o1);
            _mm_stream_si128(p.add(32).cast(), o2);
        } else {
            _mm_storeu_si128(p.cast(), o0);
            _mm_storeu_si128(p.add(16).cast(), o1);
            _mm_storeu_si128(p.add(32).cast(), o2);
        }
    }
}

/// Streaming (non-temporal) store of 16 bytes.
///
/// # Safety
/// `p .. p + 16` must be writable and `p` 16-byte aligned.
#[target_feature(enable = "ssse3")]
#[inline]
unsafe fn st_nt(p: *mut u8, v: V) {
    // SAFETY: forwarded to the caller.
    unsafe { _mm_stream_si128(p.cast(), v) }
}

/// Store the low 8 bytes.
///
/// # Safety
/// `p .. p + 8` must be writable.
#[target_feature(enable = "ssse3")]
#[inline]
unsafe fn st_lo64(p: *mut u8, v: V) {
    // SAFETY: forwarded to the caller.
    unsafe { _mm_storel_epi64(p.cast(), v) }
}

/// Store `lo` then `hi` (32 bytes).
///
/// # Safety
/// `p .. p + 32` must be writable.
#[target_feature(enable = "ssse3")]
#[inline]
unsafe fn st_pair(p: *mut u8, lo: V, hi: V) {
    // SAFETY: forwarded to the caller.
    unsafe {
        _mm_storeu_si128(p.cast(), lo);
        _mm_storeu_si128(p.add(16).cast(), hi);
    }
}

x86_kernels!("ssse3");
