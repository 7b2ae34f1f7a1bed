//! Pixel formats and frame layout (width, height, stride) with validation.
//!
//! Packed formats store `height` rows of `stride` bytes. The planar YUV 4:2:0
//! formats (`NV12`, `I420`) store a full-resolution luma plane followed by the
//! chroma planes, `stride * height * 3 / 2` bytes in all, and need even sizes.

use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The pixel formats framebus understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PixelFormat {
    /// 8-bit blue, green, red, alpha (X11's native 32-bit TrueColor order).
    Bgra,
    /// 8-bit blue, green, red, padding byte.
    Bgrx,
    /// 8-bit red, green, blue, alpha.
    Rgba,
    /// 8-bit red, green, blue (3 bytes a pixel).
    Rgb,
    /// 8-bit blue, green, red (3 bytes a pixel; OpenCV's order).
    Bgr,
    /// 8-bit luma.
    Gray8,
    /// 16-bit luma, native-endian.
    Gray16,
    /// 16-bit red, green, blue, alpha, native-endian.
    Rgba16,
    /// YUV 4:2:0: Y plane, then interleaved UV at half resolution.
    Nv12,
    /// YUV 4:2:0: Y plane, then U, then V planes at half resolution.
    I420,
}

impl PixelFormat {
    /// Every format, in declaration order.
    pub const ALL: [PixelFormat; 10] = [
        PixelFormat::Bgra,
        PixelFormat::Bgrx,
        PixelFormat::Rgba,
        PixelFormat::Rgb,
        PixelFormat::Bgr,
        PixelFormat::Gray8,
        PixelFormat::Gray16,
        PixelFormat::Rgba16,
        PixelFormat::Nv12,
        PixelFormat::I420,
    ];
    /// The canonical names, as accepted by [`PixelFormat::from_str`].
    pub const NAMES: [&'static str; 10] = [
        "BGRA", "BGRX", "RGBA", "RGB", "BGR", "GRAY8", "GRAY16", "RGBA16", "NV12", "I420",
    ];

    /// The canonical upper-case name.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Channels per pixel in the packed view (1 for the planar formats).
    pub fn channels(self) -> usize {
        match self {
            PixelFormat::Bgra | PixelFormat::Bgrx | PixelFormat::Rgba | PixelFormat::Rgba16 => 4,
            PixelFormat::Rgb | PixelFormat::Bgr => 3,
            PixelFormat::Gray8 | PixelFormat::Gray16 | PixelFormat::Nv12 | PixelFormat::I420 => 1,
        }
    }

    /// Bytes per sample (1 or 2).
    pub fn sample_bytes(self) -> usize {
        match self {
            PixelFormat::Gray16 | PixelFormat::Rgba16 => 2,
            _ => 1,
        }
    }

    /// Bytes per pixel in the (first) plane.
    pub fn bytes_per_pixel(self) -> usize {
        self.channels() * self.sample_bytes()
    }

    /// True for the YUV 4:2:0 formats, whose frames have more bytes than rows × stride.
    pub fn is_planar(self) -> bool {
        matches!(self, PixelFormat::Nv12 | PixelFormat::I420)
    }

    /// FFmpeg's `-pix_fmt` name for raw frames of this format.
    pub fn ffmpeg_name(self) -> &'static str {
        match self {
            PixelFormat::Bgra => "bgra",
            PixelFormat::Bgrx => "bgr0",
            PixelFormat::Rgba => "rgba",
            PixelFormat::Rgb => "rgb24",
            PixelFormat::Bgr => "bgr24",
            PixelFormat::Gray8 => "gray",
            PixelFormat::Gray16 => {
                if cfg!(target_endian = "little") {
                    "gray16le"
                } else {
                    "gray16be"
                }
            }
            PixelFormat::Rgba16 => {
                if cfg!(target_endian = "little") {
                    "rgba64le"
                } else {
                    "rgba64be"
                }
            }
            PixelFormat::Nv12 => "nv12",
            PixelFormat::I420 => "yuv420p",
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PixelFormat {
    type Err = Error;

    /// Case-insensitive; also accepts a few common aliases (`GRAY`, `L`, `RGB24`,
    /// `BGR24`, `YUV420P`).
    fn from_str(s: &str) -> Result<Self> {
        let up = s.trim().to_ascii_uppercase();
        let f = match up.as_str() {
            "BGRA" => PixelFormat::Bgra,
            "BGRX" | "BGR0" => PixelFormat::Bgrx,
            "RGBA" => PixelFormat::Rgba,
            "RGB" | "RGB24" => PixelFormat::Rgb,
            "BGR" | "BGR24" => PixelFormat::Bgr,
            "GRAY8" | "GRAY" | "L" => PixelFormat::Gray8,
            "GRAY16" => PixelFormat::Gray16,
            "RGBA16" | "RGBA64" => PixelFormat::Rgba16,
            "NV12" => PixelFormat::Nv12,
            "I420" | "YUV420P" => PixelFormat::I420,
            _ => return Err(Error::UnknownFormat(s.to_owned())),
        };
        Ok(f)
    }
}

/// The geometry of a frame: how its bytes are laid out in a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameLayout {
    pub width: usize,
    pub height: usize,
    /// Bytes from the start of one row to the start of the next (luma plane for YUV).
    pub stride: usize,
    pub format: PixelFormat,
}

/// Frames larger than this on either side are refused as a likely bug (2^20 px).
pub const MAX_SIDE: usize = 1 << 20;

impl FrameLayout {
    /// A validated layout. `stride` defaults to the tight row size.
    pub fn new(
        width: usize,
        height: usize,
        format: PixelFormat,
        stride: Option<usize>,
    ) -> Result<Self> {
        check_side("width", width)?;
        check_side("height", height)?;
        let row = width * format.bytes_per_pixel();
        if format.is_planar() {
            if !width.is_multiple_of(2) {
                return Err(Error::InvalidDimension {
                    what: "width",
                    value: width as i128,
                    why: "YUV 4:2:0 formats need an even width",
                });
            }
            if !height.is_multiple_of(2) {
                return Err(Error::InvalidDimension {
                    what: "height",
                    value: height as i128,
                    why: "YUV 4:2:0 formats need an even height",
                });
            }
        }
        let stride = stride.unwrap_or(row);
        if stride < row {
            return Err(Error::InvalidStride {
                stride,
                width,
                format,
                min: row,
                why: "smaller than one row",
            });
        }
        let align = if format.is_planar() {
            2
        } else {
            format.sample_bytes()
        };
        if !stride.is_multiple_of(align) {
            return Err(Error::InvalidStride {
                stride,
                width,
                format,
                min: row,
                why: "not a multiple of the sample size",
            });
        }
        Ok(FrameLayout {
            width,
            height,
            stride,
            format,
        })
    }

    /// Bytes of one row of pixels without padding.
    pub fn row_bytes(&self) -> usize {
        self.width * self.format.bytes_per_pixel()
    }

    /// Total bytes the frame occupies.
    pub fn byte_len(&self) -> usize {
        if self.format.is_planar() {
            self.stride * self.height / 2 * 3
        } else {
            self.stride * self.height
        }
    }

    /// True when rows follow each other with no padding.
    pub fn is_contiguous(&self) -> bool {
        self.stride == self.row_bytes()
    }

    /// The N-dimensional view Python and DLPack see: `(h, w, c)` for multi-channel,
    /// `(h, w)` for one channel, `(h * 3 / 2, w)` for YUV 4:2:0.
    pub fn shape(&self) -> Vec<usize> {
        let c = self.format.channels();
        if self.format.is_planar() {
            vec![self.height / 2 * 3, self.width]
        } else if c == 1 {
            vec![self.height, self.width]
        } else {
            vec![self.height, self.width, c]
        }
    }

    /// Byte strides matching [`FrameLayout::shape`].
    pub fn byte_strides(&self) -> Vec<usize> {
        let s = self.format.sample_bytes();
        if self.format.channels() == 1 {
            vec![self.stride, s]
        } else {
            vec![self.stride, self.format.bytes_per_pixel(), s]
        }
    }
}

fn check_side(what: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::InvalidDimension {
            what,
            value: 0,
            why: "must be at least 1",
        });
    }
    if value > MAX_SIDE {
        return Err(Error::InvalidDimension {
            what,
            value: value as i128,
            why: "larger than 1048576 pixels",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in PixelFormat::ALL {
            assert_eq!(f.name().parse::<PixelFormat>().unwrap(), f);
            assert_eq!(f.name().to_lowercase().parse::<PixelFormat>().unwrap(), f);
        }
        let err = "YUYV".parse::<PixelFormat>().unwrap_err().to_string();
        assert!(err.contains("\"YUYV\""), "{err}");
    }

    #[test]
    fn layout_sizes() {
        let l = FrameLayout::new(1920, 1080, PixelFormat::Bgra, None).unwrap();
        assert_eq!(l.byte_len(), 1920 * 1080 * 4);
        assert_eq!(l.shape(), vec![1080, 1920, 4]);
        assert_eq!(l.byte_strides(), vec![7680, 4, 1]);
        let l = FrameLayout::new(3, 2, PixelFormat::Gray16, Some(8)).unwrap();
        assert_eq!(l.byte_len(), 16);
        assert_eq!(l.byte_strides(), vec![8, 2]);
        assert!(!l.is_contiguous());
        let l = FrameLayout::new(4, 4, PixelFormat::Nv12, None).unwrap();
        assert_eq!(l.byte_len(), 24);
        assert_eq!(l.shape(), vec![6, 4]);
    }

    #[test]
    fn layout_errors_name_the_value() {
        let e = FrameLayout::new(0, 10, PixelFormat::Bgra, None).unwrap_err();
        assert!(e.to_string().contains("width: 0"), "{e}");
        let e = FrameLayout::new(10, 10, PixelFormat::Bgra, Some(39)).unwrap_err();
        assert!(e.to_string().contains("stride 39"), "{e}");
        assert!(e.to_string().contains("minimum 40"), "{e}");
        let e = FrameLayout::new(10, 10, PixelFormat::Gray16, Some(21)).unwrap_err();
        assert!(e.to_string().contains("sample size"), "{e}");
        let e = FrameLayout::new(3, 4, PixelFormat::I420, None).unwrap_err();
        assert!(e.to_string().contains("even width"), "{e}");
        let e = FrameLayout::new(1 << 21, 1, PixelFormat::Gray8, None).unwrap_err();
        assert!(e.to_string().contains("2097152"), "{e}");
    }
}
