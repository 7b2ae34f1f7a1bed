//! Strides → layout: the one function that turns a foreign buffer's shape and
//! byte strides (a NumPy array, a Python buffer export, a DLPack tensor) into
//! a [`FrameLayout`].
//!
//! [`StridedView::rows`] reduces any N-D view to rows of bytes: a C-contiguous
//! view is one row of all its bytes; otherwise only the first dimension may
//! have gaps (every later dimension C-contiguous, `strides[0]` ≥ the bytes of
//! one row). [`FrameLayout::from_strides`] then checks the shape against the
//! pixel format and against the caller's expectations, strictly: a buffer that
//! does not say exactly the frame that was asked for is an error naming the
//! shape, the strides and the expected shape — never a silently cropped or
//! reinterpreted frame.
//!
//! Shapes accepted for a frame of `h` rows and `w` pixels:
//!
//! | format            | 3-D                         | 2-D                     | 1-D                     |
//! |-------------------|-----------------------------|-------------------------|-------------------------|
//! | packed, C channels| `(h, w, C)`, itemsize = sample bytes | `(h, w·bpp/itemsize)` | contiguous, width and height given |
//! | NV12 / I420       | —                           | `(h·3/2, w)`            | contiguous, width and height given |
//!
//! (`bpp` = bytes a pixel; for one-channel formats with itemsize = sample
//! bytes the 2-D shape is `(h, w)`.) The item size must be 1 or the format's
//! sample size. Zero-size dimensions and negative strides are refused.
//! Depends on `format` and `error` only.

use crate::{Error, FrameLayout, PixelFormat, Result};

/// A foreign buffer's geometry: its shape and byte strides (NumPy's
/// `shape` / `strides`, or DLPack's with strides scaled to bytes) and the
/// bytes of one item.
#[derive(Clone, Copy, Debug)]
pub struct StridedView<'a> {
    pub shape: &'a [usize],
    /// Byte strides, one per dimension.
    pub strides: &'a [isize],
    /// Bytes of one element (1 for `uint8`, 2 for `uint16`).
    pub itemsize: usize,
}

/// A view reduced to rows of bytes: `rows` rows of `row_bytes` bytes, each
/// starting `stride` bytes after the previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowSpan {
    pub row_bytes: usize,
    pub stride: usize,
    pub rows: usize,
}

impl RowSpan {
    /// Bytes from the first row's start to the last row's end:
    /// `(rows - 1) * stride + row_bytes`.
    pub fn bytes_spanned(&self) -> usize {
        (self.rows - 1) * self.stride + self.row_bytes
    }
}

/// What the caller asked for. Each given value must equal what the buffer
/// says (for 2-D and 3-D buffers), and 1-D buffers need width and height.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub width: Option<usize>,
    pub height: Option<usize>,
    /// Row stride in bytes.
    pub stride: Option<usize>,
}

/// `(a, b, c)` for error messages.
fn tuple<T: std::fmt::Display>(v: &[T]) -> String {
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    if parts.len() == 1 {
        format!("({},)", parts[0])
    } else {
        format!("({})", parts.join(", "))
    }
}

impl StridedView<'_> {
    fn describe(&self) -> String {
        format!(
            "shape {} with byte strides {} and itemsize {}",
            tuple(self.shape),
            tuple(self.strides),
            self.itemsize
        )
    }

    fn bad(&self, why: impl std::fmt::Display) -> Error {
        Error::BadBuffer(format!("buffer of {}: {why}", self.describe()))
    }

    /// Checked product of `shape[from..]` times the item size.
    fn bytes_from(&self, from: usize) -> Result<usize> {
        self.shape[from..]
            .iter()
            .try_fold(self.itemsize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| self.bad("its size overflows usize"))
    }

    /// True when dimensions `from..` are C-contiguous (a dimension of size 1
    /// may have any stride, as in NumPy).
    fn contiguous_from(&self, from: usize) -> Result<bool> {
        for i in from..self.shape.len() {
            if self.shape[i] != 1 && self.strides[i] as usize != self.bytes_from(i + 1)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reduce the view to rows of bytes (see the module doc). Errors name the
    /// shape and strides: mismatched lengths, no dimensions, a zero item size,
    /// a zero-size dimension, a negative stride, gaps anywhere but in the first
    /// dimension, or rows that overlap (`strides[0]` < the bytes of one row).
    pub fn rows(&self) -> Result<RowSpan> {
        if self.shape.len() != self.strides.len() {
            return Err(self.bad(format_args!(
                "{} dimensions but {} strides",
                self.shape.len(),
                self.strides.len()
            )));
        }
        if self.shape.is_empty() {
            return Err(self.bad("a 0-dimensional buffer holds no image"));
        }
        if self.itemsize == 0 {
            return Err(self.bad("itemsize 0"));
        }
        if let Some(i) = self.shape.iter().position(|&d| d == 0) {
            return Err(self.bad(format_args!("dimension {i} has size 0")));
        }
        if let Some(i) = self.strides.iter().position(|&s| s < 0) {
            return Err(self.bad(format_args!(
                "dimension {i} has a negative stride ({}); make the array contiguous first",
                self.strides[i]
            )));
        }
        if self.contiguous_from(0)? {
            let all = self.bytes_from(0)?;
            return Ok(RowSpan {
                row_bytes: all,
                stride: all,
                rows: 1,
            });
        }
        if !self.contiguous_from(1)? {
            return Err(self.bad(
                "only the first dimension may have gaps; every later dimension must be \
                 C-contiguous (copy the array first, e.g. numpy.ascontiguousarray)",
            ));
        }
        let row_bytes = self.bytes_from(1)?;
        let stride = self.strides[0] as usize;
        // Not contiguous overall but contiguous from 1: shape[0] > 1 here.
        if stride < row_bytes {
            return Err(self.bad(format_args!(
                "rows overlap: stride {stride} of the first dimension is smaller than one \
                 row of {row_bytes} bytes"
            )));
        }
        Ok(RowSpan {
            row_bytes,
            stride,
            rows: self.shape[0],
        })
    }
}

impl FrameLayout {
    /// The layout of a frame of `format` held by a foreign buffer, and the
    /// bytes the frame spans in it from its first byte. See the module doc of
    /// `strided` for the accepted shapes; every given field of `expect` must
    /// match what a 2-D or 3-D buffer says (errors name both values).
    ///
    /// * 1-D buffers must be contiguous, need `expect.width` and
    ///   `expect.height` (`expect.stride` optional) and at least
    ///   `layout.byte_len()` bytes ([`Error::BufferTooSmall`]); the bytes
    ///   spanned are `layout.byte_len()`.
    /// * 2-D and 3-D buffers: `shape[0]` rows, stride `strides[0]` (the row
    ///   bytes for a single row); bytes spanned `(rows - 1) * stride + row_bytes`.
    ///
    /// Errors: [`Error::BadBuffer`] naming the shape, strides and expected
    /// shape; [`Error::InvalidDimension`] / [`Error::InvalidStride`] from
    /// [`FrameLayout::new`]; [`Error::BufferTooSmall`] for short 1-D buffers.
    pub fn from_strides(
        view: &StridedView<'_>,
        format: PixelFormat,
        expect: Expected,
    ) -> Result<(FrameLayout, usize)> {
        let span = view.rows()?;
        let sample = format.sample_bytes();
        if view.itemsize != 1 && view.itemsize != sample {
            return Err(view.bad(format_args!(
                "itemsize {} does not fit {format}, whose samples are {sample} byte(s) \
                 (use itemsize 1 or {sample})",
                view.itemsize
            )));
        }
        match view.shape.len() {
            1 => from_flat(view, span, format, expect),
            2 | 3 => from_rows(view, format, expect),
            n => Err(view.bad(format_args!(
                "a {n}-dimensional buffer cannot hold one {format} frame; expected {}",
                expected_shapes(format, view.itemsize, expect)
            ))),
        }
    }
}

/// The shapes a `format` frame may have, for error messages; sizes the caller
/// gave are filled in, the rest are named.
fn expected_shapes(format: PixelFormat, itemsize: usize, expect: Expected) -> String {
    let h = expect
        .height
        .map_or("height".to_string(), |h| h.to_string());
    let w = expect.width;
    let ws = w.map_or("width".to_string(), |w| w.to_string());
    if format.is_planar() {
        let rows = expect
            .height
            .map_or("height*3/2".to_string(), |h| (h / 2 * 3).to_string());
        return format!("({rows}, {ws}) for {format} with itemsize 1");
    }
    let c = format.channels();
    let bpp = format.bytes_per_pixel();
    let row_items = match w {
        Some(w) => (w * bpp / itemsize).to_string(),
        None if bpp / itemsize == 1 => "width".to_string(),
        None => format!("width*{}", bpp / itemsize),
    };
    if itemsize == format.sample_bytes() {
        if c == 1 {
            format!("({h}, {ws}) or ({h}, {ws}, 1) for {format}")
        } else {
            format!("({h}, {ws}, {c}) or ({h}, {row_items}) for {format}")
        }
    } else {
        format!("({h}, {row_items}) for {format} with itemsize {itemsize}")
    }
}

/// A 1-D buffer: contiguous bytes, geometry from `expect`.
fn from_flat(
    view: &StridedView<'_>,
    span: RowSpan,
    format: PixelFormat,
    expect: Expected,
) -> Result<(FrameLayout, usize)> {
    if span.rows != 1 {
        return Err(view.bad("a 1-D buffer must be contiguous"));
    }
    let (Some(width), Some(height)) = (expect.width, expect.height) else {
        return Err(view.bad(format_args!(
            "a 1-D buffer needs the width and height of the {format} frame \
             (got width {:?}, height {:?})",
            expect.width, expect.height
        )));
    };
    let layout = FrameLayout::new(width, height, format, expect.stride)?;
    let len = layout.byte_len();
    if span.row_bytes < len {
        return Err(Error::BufferTooSmall {
            needed: len,
            got: span.row_bytes,
            what: format!(
                "a {width}x{height} {format} frame with stride {} (1-D buffer of shape {})",
                layout.stride,
                tuple(view.shape)
            ),
        });
    }
    Ok((layout, len))
}

/// A 2-D or 3-D buffer: rows along the first dimension.
fn from_rows(
    view: &StridedView<'_>,
    format: PixelFormat,
    expect: Expected,
) -> Result<(FrameLayout, usize)> {
    let shape = view.shape;
    let wrong = || {
        view.bad(format_args!(
            "it does not hold a {format} frame; expected {}",
            expected_shapes(format, view.itemsize, expect)
        ))
    };
    let bpp = format.bytes_per_pixel();
    let (width, height) = if format.is_planar() {
        if shape.len() != 2 || view.itemsize != 1 || !shape[0].is_multiple_of(3) {
            return Err(wrong());
        }
        (shape[1], shape[0] / 3 * 2)
    } else if shape.len() == 3 {
        if shape[2] != format.channels() || view.itemsize != format.sample_bytes() {
            return Err(wrong());
        }
        (shape[1], shape[0])
    } else {
        // Rows of packed pixels: shape[1] items of `itemsize` bytes.
        let row = shape[1].checked_mul(view.itemsize).ok_or_else(wrong)?;
        if !row.is_multiple_of(bpp) {
            return Err(wrong());
        }
        (row / bpp, shape[0])
    };
    let row_bytes = width * bpp;
    let rows = shape[0];
    let stride = if rows == 1 {
        row_bytes
    } else {
        view.strides[0] as usize
    };
    for (what, want, got) in [
        ("width", expect.width, width),
        ("height", expect.height, height),
    ] {
        if let Some(want) = want {
            if want != got {
                return Err(view.bad(format_args!(
                    "{what} {want} was asked for but the buffer holds a {format} frame of \
                     {what} {got}; expected {}",
                    expected_shapes(format, view.itemsize, expect)
                )));
            }
        }
    }
    if let Some(want) = expect.stride {
        // A single row's stride is not observable: accept the row size or
        // whatever the buffer reports.
        let ok = want == stride || (rows == 1 && want == view.strides[0] as usize);
        if !ok {
            return Err(view.bad(format_args!(
                "stride {want} was asked for but the buffer's rows are {stride} bytes apart"
            )));
        }
    }
    let layout = FrameLayout::new(width, height, format, Some(stride))?;
    Ok((layout, (rows - 1) * stride + row_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use PixelFormat::*;

    fn view<'a>(shape: &'a [usize], strides: &'a [isize], itemsize: usize) -> StridedView<'a> {
        StridedView {
            shape,
            strides,
            itemsize,
        }
    }

    fn err(r: Result<(FrameLayout, usize)>) -> String {
        r.expect_err("must be refused").to_string()
    }

    fn want(w: usize, h: usize) -> Expected {
        Expected {
            width: Some(w),
            height: Some(h),
            stride: None,
        }
    }

    #[test]
    fn rows_contiguous_is_one_row() {
        let s = view(&[24, 32, 4], &[128, 4, 1], 1).rows().unwrap();
        assert_eq!(
            s,
            RowSpan {
                row_bytes: 24 * 128,
                stride: 24 * 128,
                rows: 1
            }
        );
        // Size-1 dimensions may have any stride.
        let s = view(&[1, 32, 4], &[999, 4, 1], 1).rows().unwrap();
        assert_eq!(s.rows, 1);
        assert_eq!(s.row_bytes, 128);
    }

    #[test]
    fn rows_with_gaps_in_the_first_dimension() {
        let s = view(&[24, 32, 4], &[160, 4, 1], 1).rows().unwrap();
        assert_eq!(
            s,
            RowSpan {
                row_bytes: 128,
                stride: 160,
                rows: 24
            }
        );
        assert_eq!(s.bytes_spanned(), 23 * 160 + 128);
    }

    #[test]
    fn rows_refuses_gaps_later_overlap_negative_zero() {
        // Gap in the second dimension (every other pixel).
        let e = view(&[24, 16, 4], &[128, 8, 1], 1).rows().unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, Error::BadBuffer(_)));
        assert!(
            m.contains("(24, 16, 4)") && m.contains("(128, 8, 1)"),
            "{m}"
        );
        assert!(m.contains("only the first dimension"), "{m}");
        // Channels reversed (a [..., ::-1] view).
        let e = view(&[24, 32, 4], &[128, 4, -1], 1).rows().unwrap_err();
        assert!(e.to_string().contains("negative stride (-1)"), "{e}");
        // Rows flipped.
        let e = view(&[24, 32, 4], &[-128, 4, 1], 1).rows().unwrap_err();
        assert!(e.to_string().contains("negative"), "{e}");
        // Overlapping rows.
        let e = view(&[24, 32, 4], &[64, 4, 1], 1).rows().unwrap_err();
        assert!(e.to_string().contains("stride 64"), "{e}");
        assert!(e.to_string().contains("128 bytes"), "{e}");
        // Zero-size dimension.
        let e = view(&[0, 32, 4], &[128, 4, 1], 1).rows().unwrap_err();
        assert!(e.to_string().contains("dimension 0 has size 0"), "{e}");
        // Mismatched lengths, 0-D, itemsize 0.
        assert!(view(&[2, 2], &[2], 1).rows().is_err());
        assert!(view(&[], &[], 1).rows().is_err());
        assert!(view(&[4], &[0], 0).rows().is_err());
    }

    #[test]
    fn packed_3d_and_2d_and_padding() {
        let (l, n) =
            FrameLayout::from_strides(&view(&[24, 32, 4], &[128, 4, 1], 1), Bgra, want(32, 24))
                .unwrap();
        assert_eq!(l, FrameLayout::new(32, 24, Bgra, None).unwrap());
        assert_eq!(n, 24 * 128);
        // Same frame as a (h, w*4) array, and without expectations.
        let (l2, _) =
            FrameLayout::from_strides(&view(&[24, 128], &[128, 1], 1), Bgra, Expected::default())
                .unwrap();
        assert_eq!(l2, l);
        // A padded slice: the last row lacks its padding.
        let (l, n) = FrameLayout::from_strides(
            &view(&[24, 32, 4], &[160, 4, 1], 1),
            Bgra,
            Expected {
                stride: Some(160),
                ..want(32, 24)
            },
        )
        .unwrap();
        assert_eq!(l.stride, 160);
        assert_eq!(n, 23 * 160 + 128);
        // One-channel formats: (h, w) and (h, w, 1); GRAY16 as uint16 or bytes.
        let (l, _) =
            FrameLayout::from_strides(&view(&[10, 20], &[20, 1], 1), Gray8, want(20, 10)).unwrap();
        assert_eq!((l.width, l.height), (20, 10));
        let (l, _) =
            FrameLayout::from_strides(&view(&[10, 20, 1], &[20, 1, 1], 1), Gray8, want(20, 10))
                .unwrap();
        assert_eq!((l.width, l.height), (20, 10));
        let (l, n) =
            FrameLayout::from_strides(&view(&[10, 20], &[48, 2], 2), Gray16, want(20, 10)).unwrap();
        assert_eq!((l.width, l.stride, n), (20, 48, 9 * 48 + 40));
        let (l, _) =
            FrameLayout::from_strides(&view(&[10, 40], &[40, 1], 1), Gray16, want(20, 10)).unwrap();
        assert_eq!(l.width, 20);
        // RGBA16 as (h, w, 4) uint16 and as (h, w*4) uint16.
        let (l, _) =
            FrameLayout::from_strides(&view(&[3, 5, 4], &[40, 8, 2], 2), Rgba16, want(5, 3))
                .unwrap();
        assert_eq!(l.stride, 40);
        let (l, _) =
            FrameLayout::from_strides(&view(&[3, 20], &[40, 2], 2), Rgba16, want(5, 3)).unwrap();
        assert_eq!(l.width, 5);
        // A single row: stride is the row size.
        let (l, n) =
            FrameLayout::from_strides(&view(&[1, 32, 4], &[999, 4, 1], 1), Bgra, want(32, 1))
                .unwrap();
        assert_eq!((l.stride, n), (128, 128));
    }

    #[test]
    fn wrong_channel_count_is_refused_with_both_shapes() {
        // The example: a (24, 32, 3) array for a 32x24 BGRA request.
        let m = err(FrameLayout::from_strides(
            &view(&[24, 32, 3], &[96, 3, 1], 1),
            Bgra,
            want(32, 24),
        ));
        assert!(m.contains("(24, 32, 3)"), "{m}");
        assert!(m.contains("expected (24, 32, 4)"), "{m}");
        // Without expectations too.
        let m = err(FrameLayout::from_strides(
            &view(&[24, 32, 3], &[96, 3, 1], 1),
            Bgra,
            Expected::default(),
        ));
        assert!(m.contains("(height, width, 4)"), "{m}");
        // 2-D rows that are not whole pixels.
        let m = err(FrameLayout::from_strides(
            &view(&[24, 30], &[30, 1], 1),
            Bgra,
            Expected::default(),
        ));
        assert!(m.contains("(24, 30)") && m.contains("width*4"), "{m}");
    }

    #[test]
    fn four_dimensions_are_refused() {
        // The example: a batch (2, 48, 64, 4) for one BGRA frame.
        let m = err(FrameLayout::from_strides(
            &view(&[2, 48, 64, 4], &[12288, 256, 4, 1], 1),
            Bgra,
            Expected::default(),
        ));
        assert!(m.contains("(2, 48, 64, 4)"), "{m}");
        assert!(m.contains("4-dimensional"), "{m}");
        assert!(m.contains("(height, width, 4)"), "{m}");
    }

    #[test]
    fn expectations_must_match_never_crop() {
        // The example: a (24, 8, 4) buffer when width 32 is expected.
        let m = err(FrameLayout::from_strides(
            &view(&[24, 8, 4], &[32, 4, 1], 1),
            Bgra,
            want(32, 24),
        ));
        assert!(m.contains("width 32") && m.contains("width 8"), "{m}");
        assert!(m.contains("(24, 8, 4)"), "{m}");
        let m = err(FrameLayout::from_strides(
            &view(&[24, 32, 4], &[128, 4, 1], 1),
            Bgra,
            want(32, 20),
        ));
        assert!(m.contains("height 20") && m.contains("height 24"), "{m}");
        let m = err(FrameLayout::from_strides(
            &view(&[24, 32, 4], &[160, 4, 1], 1),
            Bgra,
            Expected {
                stride: Some(128),
                ..want(32, 24)
            },
        ));
        assert!(m.contains("stride 128") && m.contains("160 bytes"), "{m}");
    }

    #[test]
    fn itemsize_must_be_one_or_the_sample_size() {
        let m = err(FrameLayout::from_strides(
            &view(&[24, 32], &[128, 4], 4),
            Bgra,
            Expected::default(),
        ));
        assert!(m.contains("itemsize 4"), "{m}");
        // 3-D needs itemsize == sample bytes: bytes of RGBA16 as (h, w, 4) uint8 is wrong.
        let m = err(FrameLayout::from_strides(
            &view(&[3, 5, 4], &[20, 4, 1], 1),
            Rgba16,
            Expected::default(),
        ));
        assert!(m.contains("(3, 5, 4)") && m.contains("itemsize 1"), "{m}");
    }

    #[test]
    fn stride_misaligned_for_the_sample_size() {
        // GRAY16 bytes with an odd row stride.
        let e = FrameLayout::from_strides(&view(&[4, 8], &[9, 1], 1), Gray16, Expected::default())
            .unwrap_err();
        assert!(matches!(e, Error::InvalidStride { stride: 9, .. }), "{e}");
    }

    #[test]
    fn planar_frames() {
        let (l, n) =
            FrameLayout::from_strides(&view(&[36, 32], &[32, 1], 1), Nv12, want(32, 24)).unwrap();
        assert_eq!(l, FrameLayout::new(32, 24, Nv12, None).unwrap());
        assert_eq!(n, l.byte_len());
        let m = err(FrameLayout::from_strides(
            &view(&[24, 32, 1], &[32, 1, 1], 1),
            I420,
            want(32, 24),
        ));
        assert!(m.contains("expected (36, 32)"), "{m}");
        let m = err(FrameLayout::from_strides(
            &view(&[35, 32], &[32, 1], 1),
            Nv12,
            Expected::default(),
        ));
        assert!(m.contains("(35, 32)") && m.contains("height*3/2"), "{m}");
        // An odd width is refused by the layout.
        let e = FrameLayout::from_strides(&view(&[6, 5], &[5, 1], 1), I420, Expected::default())
            .unwrap_err();
        assert!(e.to_string().contains("even width"), "{e}");
    }

    #[test]
    fn one_dimensional_buffers() {
        let (l, n) =
            FrameLayout::from_strides(&view(&[3072], &[1], 1), Bgra, want(32, 24)).unwrap();
        assert_eq!((l.stride, n), (128, 3072));
        // Larger than needed is fine (a slot); stride optional.
        let (l, n) = FrameLayout::from_strides(
            &view(&[5000], &[1], 1),
            Bgra,
            Expected {
                stride: Some(160),
                ..want(32, 24)
            },
        )
        .unwrap();
        assert_eq!((l.stride, n), (160, 24 * 160));
        // uint16 items.
        let (l, _) =
            FrameLayout::from_strides(&view(&[200], &[2], 2), Gray16, want(20, 10)).unwrap();
        assert_eq!(l.stride, 40);
        // Too small.
        let e = FrameLayout::from_strides(&view(&[3071], &[1], 1), Bgra, want(32, 24)).unwrap_err();
        assert!(matches!(
            e,
            Error::BufferTooSmall {
                needed: 3072,
                got: 3071,
                ..
            }
        ));
        // Needs width and height.
        let m = err(FrameLayout::from_strides(
            &view(&[3072], &[1], 1),
            Bgra,
            Expected {
                width: Some(32),
                ..Expected::default()
            },
        ));
        assert!(m.contains("width and height"), "{m}");
        // Must be contiguous.
        let m = err(FrameLayout::from_strides(
            &view(&[3072], &[2], 1),
            Bgra,
            want(32, 24),
        ));
        assert!(m.contains("contiguous") && m.contains("(2,)"), "{m}");
    }
}
