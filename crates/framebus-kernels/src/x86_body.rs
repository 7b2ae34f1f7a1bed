//! The x86 kernel bodies, written once and instantiated by `x86_ssse3` (one
//! 128-bit lane) and `x86_avx2` (two 128-bit lanes) through [`x86_kernels!`].
//!
//! Every operation used here is lane-local (`pshufb`, `pmaddwd`, `phaddd`,
//! `packs`/`packus`, unpacks), so an AVX2 register is simply two SSSE3 registers
//! side by side: lane 1 is loaded from the next chunk of pixels (`ld(p, step)`)
//! and the store helpers (`st`, `st3`, `st_lo64`, `st_pair`) put the lanes'
//! results back in pixel order. Each instantiating module provides `V`, `LANES`,
//! `ST3_BYTES` and those helpers, compiled with its own `target_feature`.
//! All arithmetic is exact integer arithmetic identical to `scalar`; the last
//! pixels of a row (fewer than one full step) are handed to `scalar`.

/// Expands to `shuffle`, `luma`, `u16_to_u8`, `u8_to_u16` and `yuv` for the
/// target feature `$feat`, using the lane helpers in scope at the call site.
macro_rules! x86_kernels {
    ($feat:literal) => {
        /// Four `V` i16 weights `[k0, k1, k2, k3]` repeated in every lane.
        #[target_feature(enable = $feat)]
        #[inline]
        fn splat_k(k: [i16; 4]) -> V {
            bcast(_mm_setr_epi16(
                k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3],
            ))
        }

        /// The `pshufb` mask turning 4 three-byte pixels into 4 four-byte pixels
        /// (byte 3 zero); unused for four-byte sources.
        #[target_feature(enable = $feat)]
        #[inline]
        fn expand_mask(sb: usize) -> V {
            if sb == 3 {
                bcast(_mm_setr_epi8(
                    0, 1, 2, -128, 3, 4, 5, -128, 6, 7, 8, -128, 9, 10, 11, -128,
                ))
            } else {
                zero()
            }
        }

        /// Load 4 pixels a lane (lanes `16 * sb` bytes apart) as 4-byte pixels.
        ///
        /// # Safety
        /// `p .. p + (LANES - 1) * 16 * sb + 16` must be readable.
        #[target_feature(enable = $feat)]
        #[inline]
        unsafe fn load_px4(p: *const u8, sb: usize, ex: V) -> V {
            // SAFETY: forwarded to the caller.
            let v = unsafe { ld(p, 16 * sb) };
            if sb == 3 {
                shufb(v, ex)
            } else {
                v
            }
        }

        /// Per-pixel dot products (4 i32 a lane) of 4 four-byte pixels with `k`.
        #[target_feature(enable = $feat)]
        #[inline]
        fn dot4(v: V, k: V) -> V {
            let z = zero();
            hadd32(madd16(unpacklo8(v, z), k), madd16(unpackhi8(v, z), k))
        }

        /// Pack 4 × 4 i32 a lane into 16 saturated bytes a lane.
        #[target_feature(enable = $feat)]
        #[inline]
        fn pack4(d: [V; 4]) -> V {
            packus16(packs32(d[0], d[1]), packs32(d[2], d[3]))
        }

        /// Per-pixel chroma dots of 16 pixels a lane → 8 rounded 2×2 block values
        /// (the first 8 bytes of each lane).
        #[target_feature(enable = $feat)]
        #[inline]
        fn blocks8(d: [V; 4], ca: V) -> V {
            let a = srai_c(add32(hadd32(d[0], d[1]), ca));
            let b = srai_c(add32(hadd32(d[2], d[3]), ca));
            let h = packs32(a, b);
            packus16(h, h)
        }

        /// Bytes a 16-pixel-a-lane step reads from its first pixel.
        fn need16(sb: usize) -> usize {
            LANES * 16 * sb + 16 - 4 * sb
        }

        /// See [`crate::scalar::shuffle`].
        ///
        /// # Safety
        /// The CPU must support the target feature of this module.
        #[target_feature(enable = $feat)]
        pub unsafe fn shuffle(spec: &ShufSpec, src: &[u8], dst: &mut [u8], w: usize) {
            let (sb, db) = (spec.sbpp, spec.dbpp);
            let (sl, dl) = (w * sb, w * db);
            assert!(src.len() >= sl && dst.len() >= dl, "shuffle: short row");
            let (m, f) = spec.table4();
            // SAFETY: both arrays are 16 readable bytes.
            let (mask, fill) = unsafe {
                (
                    bcast(_mm_loadu_si128(m.as_ptr().cast())),
                    bcast(_mm_loadu_si128(f.as_ptr().cast())),
                )
            };
            let src_need = (LANES - 1) * 4 * sb + 16;
            let dst_need = if db == 4 { 16 * LANES } else { ST3_BYTES };
            let mut x = 0;
            // Align the destination to the register size first (the first few
            // pixels in scalar code): stores that straddle cache lines are slow,
            // and streaming stores need it. Every step below advances the
            // destination by a multiple of the alignment.
            let mut aligned = false;
            if w >= 64 {
                let a = 16 * LANES;
                let base = dst.as_ptr() as usize;
                if let Some(x0) = (0..a).find(|&x0| (base + x0 * db) % a == 0) {
                    scalar::shuffle(spec, src, dst, x0);
                    x = x0;
                    aligned = true;
                }
            }
            let nt = spec.stream && aligned;
            if db == 3 {
                // 16 pixels a lane-step, written as 48 · LANES contiguous bytes
                // (no overlapping stores).
                let need4 = 12 * LANES * sb + src_need;
                while x * sb + need4 <= sl && x * 3 + 48 * LANES <= dl {
                    // SAFETY: the loop condition keeps the four loads (the last
                    // starting `12 · LANES · sb` bytes in) inside `src[..sl]` and the
                    // `48 · LANES`-byte store inside `dst[..dl]`.
                    unsafe {
                        let p = src.as_ptr().add(x * sb);
                        let q = 4 * LANES * sb;
                        // 4-byte pixels: the lanes' chunks are adjacent, one load.
                        let l = |p: *const u8| if sb == 4 { ld_contig(p) } else { ld(p, 4 * sb) };
                        let r = |v: V| or(shufb(v, mask), fill);
                        let (a, b) = (r(l(p)), r(l(p.add(q))));
                        let (c, d) = (r(l(p.add(2 * q))), r(l(p.add(3 * q))));
                        st3x4(dst.as_mut_ptr().add(x * 3), a, b, c, d, nt);
                    }
                    x += 16 * LANES;
                }
            }
            while x * sb + src_need <= sl && x * db + dst_need <= dl {
                // SAFETY: the loop condition keeps the load (`src_need` bytes from
                // `x * sb`) inside `src[..sl]` and the store (`dst_need` bytes from
                // `x * db`) inside `dst[..dl]`; both lengths were asserted above.
                unsafe {
                    let p = src.as_ptr().add(x * sb);
                    let v = if sb == 4 { ld_contig(p) } else { ld(p, 4 * sb) };
                    let r = or(shufb(v, mask), fill);
                    if db == 4 && nt {
                        st_nt(dst.as_mut_ptr().add(x * 4), r);
                    } else if db == 4 {
                        st(dst.as_mut_ptr().add(x * 4), r);
                    } else {
                        st3(dst.as_mut_ptr().add(x * 3), r);
                    }
                }
                x += 4 * LANES;
            }
            if nt {
                // Order the streaming stores before whatever signals completion.
                _mm_sfence();
            }
            scalar::shuffle(spec, &src[x * sb..], &mut dst[x * db..], w - x);
        }

        /// See [`crate::scalar::luma`].
        ///
        /// # Safety
        /// The CPU must support the target feature of this module.
        #[target_feature(enable = $feat)]
        pub unsafe fn luma(spec: &LumaSpec, src: &[u8], dst: &mut [u8], w: usize) {
            let sb = spec.sbpp;
            assert!(src.len() >= w * sb && dst.len() >= w, "luma: short row");
            let (k, add, ex) = (splat_k(spec.k), splat32(spec.add), expand_mask(sb));
            let mut x = 0;
            while x * sb + need16(sb) <= w * sb && x + 16 * LANES <= w {
                // SAFETY: the loop condition keeps the 16-pixel-a-lane loads inside
                // `src[..w * sb]` (see `need16`) and the `16 * LANES`-byte store
                // inside `dst[..w]`.
                unsafe {
                    let p = src.as_ptr().add(x * sb);
                    let mut d = [zero(); 4];
                    for (i, di) in d.iter_mut().enumerate() {
                        let v = load_px4(p.add(4 * i * sb), sb, ex);
                        *di = srai_y(add32(dot4(v, k), add));
                    }
                    st(dst.as_mut_ptr().add(x), pack4(d));
                }
                x += 16 * LANES;
            }
            scalar::luma(spec, &src[x * sb..], &mut dst[x..], w - x);
        }

        /// `(v * 255 + 32895) >> 16` on 16-bit lanes: high half of `v * 255`
        /// plus the carry out of `low half + 32895` (carry iff low ≥ 32641).
        #[target_feature(enable = $feat)]
        #[inline]
        fn round16to8(v: V) -> V {
            let c255 = splat16(255);
            let hi = mulhi_u16(v, c255);
            let lo = mullo16(v, c255);
            // all-ones where there is no carry (low ≤ 32640)
            let no_carry = cmpeq16(subs_u16(lo, splat16(32640)), zero());
            add16(add16(hi, splat16(1)), no_carry)
        }

        /// See [`crate::scalar::u16_to_u8`].
        ///
        /// # Safety
        /// The CPU must support the target feature of this module.
        #[target_feature(enable = $feat)]
        pub unsafe fn u16_to_u8(src: &[u8], dst: &mut [u8], n: usize) {
            assert!(src.len() >= 2 * n && dst.len() >= n, "u16_to_u8: short row");
            let mut i = 0;
            while i + 16 * LANES <= n {
                // SAFETY: reads `32 * LANES` bytes from `2 * i` (≤ 2n) and writes
                // `16 * LANES` bytes from `i` (≤ n), per the loop condition.
                unsafe {
                    let p = src.as_ptr().add(2 * i);
                    let a = round16to8(ld(p, 32));
                    let b = round16to8(ld(p.add(16), 32));
                    st(dst.as_mut_ptr().add(i), packus16(a, b));
                }
                i += 16 * LANES;
            }
            scalar::u16_to_u8(&src[2 * i..], &mut dst[i..], n - i);
        }

        /// See [`crate::scalar::u8_to_u16`].
        ///
        /// # Safety
        /// The CPU must support the target feature of this module.
        #[target_feature(enable = $feat)]
        pub unsafe fn u8_to_u16(src: &[u8], dst: &mut [u8], n: usize) {
            assert!(src.len() >= n && dst.len() >= 2 * n, "u8_to_u16: short row");
            let mut i = 0;
            while i + 16 * LANES <= n {
                // SAFETY: reads `16 * LANES` bytes from `i` and writes `32 * LANES`
                // from `2 * i`, inside the asserted lengths per the loop condition.
                unsafe {
                    let v = ld(src.as_ptr().add(i), 16);
                    st_pair(
                        dst.as_mut_ptr().add(2 * i),
                        unpacklo8(v, v),
                        unpackhi8(v, v),
                    );
                }
                i += 16 * LANES;
            }
            scalar::u8_to_u16(&src[i..], &mut dst[2 * i..], n - i);
        }

        /// See [`crate::scalar::box2_4`].
        ///
        /// # Safety
        /// The CPU must support the target feature of this module.
        #[target_feature(enable = $feat)]
        pub unsafe fn box2_4(r0: &[u8], r1: &[u8], out: &mut [u8], w: usize) {
            assert!(
                r0.len() >= 8 * w && r1.len() >= 8 * w && out.len() >= 4 * w,
                "box2: short row"
            );
            let (z, two) = (zero(), splat16(2));
            let mut x = 0;
            while x + 4 * LANES <= w {
                // SAFETY: reads `32 · LANES` bytes of each row from `8 · x` (≤ 8w)
                // and writes `16 · LANES` bytes from `4 · x` (≤ 4w), per the loop
                // condition and the asserted lengths.
                unsafe {
                    let (p0, p1) = (r0.as_ptr().add(8 * x), r1.as_ptr().add(8 * x));
                    let mut res = [z; 2];
                    for (i, r) in res.iter_mut().enumerate() {
                        let (a, b) = (ld(p0.add(16 * i), 32), ld(p1.add(16 * i), 32));
                        let lo = add16(unpacklo8(a, z), unpacklo8(b, z));
                        let hi = add16(unpackhi8(a, z), unpackhi8(b, z));
                        let sum = add16(unpacklo64(lo, hi), unpackhi64(lo, hi));
                        *r = srli16_2(add16(sum, two));
                    }
                    st(out.as_mut_ptr().add(4 * x), packus16(res[0], res[1]));
                }
                x += 4 * LANES;
            }
            scalar::box2_4(&r0[8 * x..], &r1[8 * x..], &mut out[4 * x..], w - x);
        }

        /// See [`crate::scalar::yuv`].
        ///
        /// # Safety
        /// The CPU must support the target feature of this module.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $feat)]
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
            let (ky, ku, kv) = (splat_k(spec.ky), splat_k(spec.ku), splat_k(spec.kv));
            let (ya, ca, ex) = (splat32(spec.y_add), splat32(spec.c_add), expand_mask(sb));
            let mut x = 0;
            while x * sb + need16(sb) <= w * sb && x + 16 * LANES <= w {
                // SAFETY: the loop condition keeps the loads inside both source rows
                // (`need16`), the `16 * LANES`-byte luma stores inside `y0[..w]` and
                // `y1[..w]`, the NV12 store (`16 * LANES` bytes from `x`) inside
                // `uv[..w]` and the I420 stores (`8 * LANES` from `x / 2`) inside
                // `u[..w / 2]`, `v[..w / 2]`; `check_yuv_rows` checked all lengths.
                unsafe {
                    let (p0, p1) = (s0.as_ptr().add(x * sb), s1.as_ptr().add(x * sb));
                    let z = zero();
                    let (mut ya0, mut ya1, mut du, mut dv) = ([z; 4], [z; 4], [z; 4], [z; 4]);
                    for i in 0..4 {
                        let a = load_px4(p0.add(4 * i * sb), sb, ex);
                        let b = load_px4(p1.add(4 * i * sb), sb, ex);
                        let (al, ah) = (unpacklo8(a, z), unpackhi8(a, z));
                        let (bl, bh) = (unpacklo8(b, z), unpackhi8(b, z));
                        ya0[i] = srai_y(add32(hadd32(madd16(al, ky), madd16(ah, ky)), ya));
                        ya1[i] = srai_y(add32(hadd32(madd16(bl, ky), madd16(bh, ky)), ya));
                        let (sl, sh) = (add16(al, bl), add16(ah, bh));
                        du[i] = hadd32(madd16(sl, ku), madd16(sh, ku));
                        dv[i] = hadd32(madd16(sl, kv), madd16(sh, kv));
                    }
                    st(y0.as_mut_ptr().add(x), pack4(ya0));
                    st(y1.as_mut_ptr().add(x), pack4(ya1));
                    let (u, v) = (blocks8(du, ca), blocks8(dv, ca));
                    match &mut c {
                        Chroma::Nv12(uv) => st(uv.as_mut_ptr().add(x), unpacklo8(u, v)),
                        Chroma::I420(cu, cv) => {
                            st_lo64(cu.as_mut_ptr().add(x / 2), u);
                            st_lo64(cv.as_mut_ptr().add(x / 2), v);
                        }
                    }
                }
                x += 16 * LANES;
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
    };
}
