//! Parameters of the row kernels: channel shuffles, luma weights and the YUV
//! matrices, all as small integers so every implementation (scalar, SSSE3,
//! AVX2, NEON) computes exactly the same bytes.
//!
//! Fixed-point formulas (documented in docs/kernels.md):
//! * luma / Y: `Y = clamp((ky·p + y_add) >> 15, 0, 255)`, `ky` in 1/32768 units,
//!   `y_add = (offset << 15) + (1 << 14)` (round half up).
//! * chroma from a 2×2 block: `s` = per-channel sum of the 4 pixels (0..1020),
//!   `U = clamp((ku·s + c_add) >> 17, 0, 255)` with `c_add = (128 << 17) + (1 << 16)`,
//!   i.e. the rounded mean of the 4 pixels' exact chroma.
//! * GRAY8 is full-range BT.601 luma: `(9798 R + 19234 G + 3736 B + 16384) >> 15`
//!   (= OpenCV's `(4899 R + 9617 G + 1868 B + 8192) >> 14`).
//!
//! Used by `scalar`, the SIMD modules and `convert`; depends on the core's `PixelFormat`.

use framebus_core::PixelFormat;
use std::str::FromStr;

/// Marks a destination byte that is filled with 255 (alpha / padding).
pub const FILL: u8 = 0xff;
/// Fixed-point shift of the luma weights.
pub const Y_SHIFT: u32 = 15;
/// Fixed-point shift of the chroma weights applied to a 2×2 sum.
pub const C_SHIFT: u32 = 17;

/// Copy/reorder bytes of `sbpp`-byte pixels into `dbpp`-byte pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShufSpec {
    /// Source bytes per pixel: 1, 3 or 4.
    pub sbpp: usize,
    /// Destination bytes per pixel: 3 or 4.
    pub dbpp: usize,
    /// For each destination byte, the source byte it comes from, or [`FILL`].
    pub map: [u8; 4],
    /// Use non-temporal (streaming) stores where the destination is aligned: set
    /// for destinations much larger than the cache, which would only evict
    /// the source and cost a read-for-ownership per line. Same bytes either way.
    pub stream: bool,
}

impl ShufSpec {
    /// The byte-table form for 4 pixels (16 source bytes → up to 16 destination
    /// bytes), as `pshufb` / `tbl` take it: for each destination byte the source
    /// byte index, or 0x80 (→ 0) where the byte is filled; and the fill bytes
    /// (255) to OR in.
    pub(crate) fn table4(&self) -> ([u8; 16], [u8; 16]) {
        let (sb, db) = (self.sbpp, self.dbpp);
        let mut m = [0x80u8; 16];
        let mut f = [0u8; 16];
        for i in 0..4 {
            for c in 0..db {
                if self.map[c] == FILL {
                    f[i * db + c] = 255;
                } else {
                    m[i * db + c] = (i * sb) as u8 + self.map[c];
                }
            }
        }
        (m, f)
    }
}

/// Weighted sum of the bytes of a 3- or 4-byte pixel (luma).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LumaSpec {
    /// Source bytes per pixel: 3 or 4.
    pub sbpp: usize,
    /// Weight of each source byte (1/32768 units); byte 3 of 4-byte formats is 0.
    pub k: [i16; 4],
    /// Added before the shift (offset and rounding).
    pub add: i32,
}

/// RGB → YUV 4:2:0 weights, arranged by source byte position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YuvSpec {
    pub sbpp: usize,
    pub ky: [i16; 4],
    pub y_add: i32,
    pub ku: [i16; 4],
    pub kv: [i16; 4],
    pub c_add: i32,
}

/// The YUV colour matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum YuvMatrix {
    /// ITU-R BT.601 (SD; FFmpeg's default for `-pix_fmt yuv420p` from RGB).
    #[default]
    Bt601,
    /// ITU-R BT.709 (HD).
    Bt709,
}

/// Limited ("TV", Y 16..235, UV 16..240) or full ("PC", 0..255) range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum YuvRange {
    #[default]
    Limited,
    Full,
}

impl FromStr for YuvMatrix {
    type Err = crate::KernelError;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().replace(['.', '_', '-'], "").as_str() {
            "bt601" | "601" | "smpte170m" | "bt470bg" => Ok(YuvMatrix::Bt601),
            "bt709" | "709" => Ok(YuvMatrix::Bt709),
            _ => Err(crate::KernelError::Invalid {
                what: "YUV matrix",
                value: format!("{s:?}"),
                why: "expected \"bt601\" or \"bt709\"".into(),
            }),
        }
    }
}

impl FromStr for YuvRange {
    type Err = crate::KernelError;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "limited" | "tv" | "mpeg" => Ok(YuvRange::Limited),
            "full" | "pc" | "jpeg" => Ok(YuvRange::Full),
            _ => Err(crate::KernelError::Invalid {
                what: "YUV range",
                value: format!("{s:?}"),
                why: "expected \"limited\" or \"full\"".into(),
            }),
        }
    }
}

/// Byte positions of R, G, B and alpha (None: no alpha, or an X padding byte).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Channels {
    pub r: usize,
    pub g: usize,
    pub b: usize,
    pub a: Option<usize>,
    pub bpp: usize,
}

/// Channel positions of the 8-bit packed formats (GRAY8: all three are byte 0).
pub(crate) fn channels(f: PixelFormat) -> Option<Channels> {
    let c = |r, g, b, a, bpp| Some(Channels { r, g, b, a, bpp });
    match f {
        PixelFormat::Bgra => c(2, 1, 0, Some(3), 4),
        PixelFormat::Bgrx => c(2, 1, 0, None, 4),
        PixelFormat::Rgba => c(0, 1, 2, Some(3), 4),
        PixelFormat::Rgb => c(0, 1, 2, None, 3),
        PixelFormat::Bgr => c(2, 1, 0, None, 3),
        PixelFormat::Gray8 => c(0, 0, 0, None, 1),
        _ => None,
    }
}

/// The byte shuffle from one 8-bit packed format to another with 3 or 4 bytes a
/// pixel. Alpha is copied when both have it; otherwise alpha and X bytes are 255.
pub(crate) fn shuf_spec(s: PixelFormat, d: PixelFormat) -> ShufSpec {
    let sc = channels(s).expect("8-bit packed source");
    let dc = channels(d).expect("8-bit packed destination");
    let mut map = [FILL; 4];
    map[dc.r] = sc.r as u8;
    map[dc.g] = sc.g as u8;
    map[dc.b] = sc.b as u8;
    if let (Some(da), Some(sa)) = (dc.a, sc.a) {
        map[da] = sa as u8;
    }
    ShufSpec {
        sbpp: sc.bpp,
        dbpp: dc.bpp,
        map,
        stream: false,
    }
}

fn q15(x: f64) -> i32 {
    (x * 32768.0).round() as i32
}

/// Luma weights (kr, kg, kb) summing exactly to `round(scale · 32768)`.
fn luma_weights(m: YuvMatrix, scale: f64) -> (i32, i32, i32) {
    let (kr, kb) = match m {
        YuvMatrix::Bt601 => (0.299, 0.114),
        YuvMatrix::Bt709 => (0.2126, 0.0722),
    };
    let (r, b) = (q15(kr * scale), q15(kb * scale));
    (r, q15(scale) - r - b, b)
}

/// Integer weights `[[yr, yg, yb], [ur, ug, ub], [vr, vg, vb]]` (1/32768 units) and
/// the Y offset for a matrix and range. U and V rows sum to exactly 0 so grey
/// maps to 128.
pub fn yuv_weights(m: YuvMatrix, r: YuvRange) -> ([[i32; 3]; 3], i32) {
    let (sy, sc, off) = match r {
        YuvRange::Limited => (219.0 / 255.0, 224.0 / 255.0, 16),
        YuvRange::Full => (1.0, 1.0, 0),
    };
    let (kr, kb) = match m {
        YuvMatrix::Bt601 => (0.299, 0.114),
        YuvMatrix::Bt709 => (0.2126, 0.0722),
    };
    let (yr, yg, yb) = luma_weights(m, sy);
    let ub = q15(0.5 * sc);
    let ur = q15(-kr / (2.0 * (1.0 - kb)) * sc);
    let vr = q15(0.5 * sc);
    let vb = q15(-kb / (2.0 * (1.0 - kr)) * sc);
    (
        [[yr, yg, yb], [ur, -(ur + ub), ub], [vr, -(vr + vb), vb]],
        off,
    )
}

fn place(c: &Channels, w: [i32; 3]) -> [i16; 4] {
    let mut k = [0i32; 4];
    k[c.r] += w[0];
    k[c.g] += w[1];
    k[c.b] += w[2];
    k.map(|v| v as i16)
}

/// Luma (GRAY8) weights for an 8-bit colour source format.
pub(crate) fn luma_spec(s: PixelFormat) -> LumaSpec {
    let c = channels(s).expect("8-bit colour source");
    let (r, g, b) = luma_weights(YuvMatrix::Bt601, 1.0);
    LumaSpec {
        sbpp: c.bpp,
        k: place(&c, [r, g, b]),
        add: 1 << (Y_SHIFT - 1),
    }
}

/// YUV weights for an 8-bit colour source format (3 or 4 bytes a pixel).
pub(crate) fn yuv_spec(s: PixelFormat, m: YuvMatrix, r: YuvRange) -> YuvSpec {
    let c = channels(s).expect("8-bit colour source");
    let (w, off) = yuv_weights(m, r);
    YuvSpec {
        sbpp: c.bpp,
        ky: place(&c, w[0]),
        y_add: (off << Y_SHIFT) + (1 << (Y_SHIFT - 1)),
        ku: place(&c, w[1]),
        kv: place(&c, w[2]),
        c_add: (128 << C_SHIFT) + (1 << (C_SHIFT - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_hit_the_range_ends() {
        for m in [YuvMatrix::Bt601, YuvMatrix::Bt709] {
            let (w, off) = yuv_weights(m, YuvRange::Limited);
            assert_eq!(off, 16);
            // White: 16 + 219 = 235 exactly; grey chroma: 128.
            let y = (255 * (w[0][0] + w[0][1] + w[0][2]) + (16 << 15) + (1 << 14)) >> 15;
            assert_eq!(y, 235);
            assert_eq!(w[1].iter().sum::<i32>(), 0);
            assert_eq!(w[2].iter().sum::<i32>(), 0);
            // Pure blue: U = 128 + 112 = 240 (limited).
            let u = (w[1][2] * 1020 + (128 << 17) + (1 << 16)) >> 17;
            assert_eq!(u, 240);
        }
        assert_eq!(luma_weights(YuvMatrix::Bt601, 1.0), (9798, 19234, 3736));
    }

    #[test]
    fn shuffle_maps() {
        let s = shuf_spec(PixelFormat::Bgra, PixelFormat::Rgb);
        assert_eq!((s.sbpp, s.dbpp, s.map), (4, 3, [2, 1, 0, FILL]));
        let s = shuf_spec(PixelFormat::Bgrx, PixelFormat::Rgba);
        assert_eq!(s.map, [2, 1, 0, FILL]);
        let s = shuf_spec(PixelFormat::Gray8, PixelFormat::Bgra);
        assert_eq!((s.sbpp, s.map), (1, [0, 0, 0, FILL]));
    }
}
