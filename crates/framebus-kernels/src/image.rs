//! `ImageRef` / `ImageMut`: borrowed, validated views of strided images.
//!
//! A view is a byte slice plus a [`FrameLayout`] (width, height, row stride,
//! format). Packed images need `(height - 1) * stride + row_bytes` bytes (the last
//! row may lack its padding, as a NumPy slice of a padded array does). YUV 4:2:0
//! images need the full `FrameLayout::byte_len()`: luma rows of `stride` bytes,
//! then NV12's interleaved chroma rows of `stride` bytes or I420's U and V planes
//! with rows of `stride / 2` bytes. Everything below this module indexes slices
//! that were checked here once.

use crate::{KernelError, Result};
use framebus_core::{FrameLayout, PixelFormat};

/// Bytes a buffer must hold for `layout`.
pub fn needed_bytes(layout: &FrameLayout) -> usize {
    if layout.format.is_planar() {
        layout.byte_len()
    } else {
        (layout.height - 1) * layout.stride + layout.row_bytes()
    }
}

fn check(what: &'static str, len: usize, layout: &FrameLayout) -> Result<()> {
    let needed = needed_bytes(layout);
    if len < needed {
        return Err(KernelError::BufferTooSmall {
            what,
            needed,
            got: len,
            width: layout.width,
            height: layout.height,
            format: layout.format,
            stride: layout.stride,
        });
    }
    Ok(())
}

/// A read-only strided image.
#[derive(Clone, Copy, Debug)]
pub struct ImageRef<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) layout: FrameLayout,
}

impl<'a> ImageRef<'a> {
    /// A view of `data` laid out as `layout`; fails if `data` is too short.
    pub fn new(data: &'a [u8], layout: FrameLayout) -> Result<Self> {
        check("source", data.len(), &layout)?;
        Ok(ImageRef { data, layout })
    }

    /// Shorthand for [`FrameLayout::new`] + [`ImageRef::new`].
    pub fn from_parts(
        data: &'a [u8],
        width: usize,
        height: usize,
        format: PixelFormat,
        stride: Option<usize>,
    ) -> Result<Self> {
        Self::new(data, FrameLayout::new(width, height, format, stride)?)
    }

    pub fn layout(&self) -> &FrameLayout {
        &self.layout
    }

    /// Bytes of row `y` of a packed image (without padding).
    pub(crate) fn row(&self, y: usize) -> &'a [u8] {
        let s = y * self.layout.stride;
        &self.data[s..s + self.layout.row_bytes()]
    }
}

/// A writable strided image.
#[derive(Debug)]
pub struct ImageMut<'a> {
    pub(crate) data: &'a mut [u8],
    pub(crate) layout: FrameLayout,
}

impl<'a> ImageMut<'a> {
    /// A view of `data` laid out as `layout`; fails if `data` is too short.
    pub fn new(data: &'a mut [u8], layout: FrameLayout) -> Result<Self> {
        check("destination", data.len(), &layout)?;
        Ok(ImageMut { data, layout })
    }

    /// Shorthand for [`FrameLayout::new`] + [`ImageMut::new`].
    pub fn from_parts(
        data: &'a mut [u8],
        width: usize,
        height: usize,
        format: PixelFormat,
        stride: Option<usize>,
    ) -> Result<Self> {
        Self::new(data, FrameLayout::new(width, height, format, stride)?)
    }

    pub fn layout(&self) -> &FrameLayout {
        &self.layout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffers_are_refused_with_sizes() {
        let buf = vec![0u8; 100];
        let e = ImageRef::from_parts(&buf, 10, 3, PixelFormat::Bgra, None).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("100 bytes") && s.contains("120 bytes"), "{s}");
        assert!(s.contains("10x3 BGRA"), "{s}");
        // The last row may lack its padding: 2 * 48 + 40 = 136.
        let buf = vec![0u8; 136];
        ImageRef::from_parts(&buf, 10, 3, PixelFormat::Bgra, Some(48)).unwrap();
        let e = ImageRef::from_parts(&buf[..135], 10, 3, PixelFormat::Bgra, Some(48));
        assert!(e.unwrap_err().to_string().contains("136 bytes needed"));
        // Planar needs the whole frame.
        let mut buf = vec![0u8; 4 * 4 * 3 / 2 - 1];
        let e = ImageMut::from_parts(&mut buf, 4, 4, PixelFormat::Nv12, None).unwrap_err();
        assert!(e.to_string().contains("24 bytes needed"), "{e}");
    }
}
