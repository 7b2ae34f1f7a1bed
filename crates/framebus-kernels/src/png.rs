//! PNG output for frames (`Frame.save_png`, `framebus grab -o x.png`).
//!
//! Rows are converted one at a time into PNG channel order and streamed into
//! the encoder, so saving never holds a second full copy of the image.
//! Level 1 (the default) uses the png crate's `fdeflate` fast path, which is
//! many times faster than zlib level 6 on screen content; 0 stores, 2..=9 are
//! zlib levels.
//!
//! Errors are `std::io::Error`: [`std::io::ErrorKind::InvalidInput`] for a
//! bad level or a format PNG cannot hold (the caller's mistake), the writer's
//! own error when writing fails, and [`std::io::ErrorKind::Other`] for an
//! encoder failure.
//!
//! Depends on framebus-core and the png crate only; used by the CLI
//! (`framebus grab`) and the Python bindings (`Frame.save_png`).

use framebus_core::{Frame, PixelFormat};
use std::io::{self, Write};

/// Default compression level: fast.
pub const DEFAULT_LEVEL: u8 = 1;

/// Encode `frame` as PNG into `out`. `alpha`: keep the alpha channel of
/// BGRA/RGBA frames (screen captures have none, so the default drops it).
///
/// Errors: `InvalidInput` for `level > 9` or a planar YUV frame (both name the
/// value), the writer's error if writing fails, `Other` if the encoder fails.
pub fn write_png<W: Write>(frame: &Frame, out: W, level: u8, alpha: bool) -> io::Result<()> {
    use ::png::{BitDepth, ColorType};
    if level > 9 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("PNG compression level {level} is out of range (0..=9)"),
        ));
    }
    let fmt = frame.format();
    let (color, depth) = match fmt {
        PixelFormat::Bgra | PixelFormat::Rgba if alpha => (ColorType::Rgba, BitDepth::Eight),
        PixelFormat::Bgra | PixelFormat::Bgrx | PixelFormat::Rgba => {
            (ColorType::Rgb, BitDepth::Eight)
        }
        PixelFormat::Rgb | PixelFormat::Bgr => (ColorType::Rgb, BitDepth::Eight),
        PixelFormat::Gray8 => (ColorType::Grayscale, BitDepth::Eight),
        PixelFormat::Gray16 => (ColorType::Grayscale, BitDepth::Sixteen),
        PixelFormat::Rgba16 => (ColorType::Rgba, BitDepth::Sixteen),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot save a {other} frame as PNG (planar YUV); convert it first"),
            ))
        }
    };
    let (w, h) = (frame.width(), frame.height());
    let mut enc = ::png::Encoder::new(out, w as u32, h as u32);
    enc.set_color(color);
    enc.set_depth(depth);
    match level {
        0 => enc.set_deflate_compression(::png::DeflateCompression::NoCompression),
        1 => enc.set_compression(::png::Compression::Fast),
        n => enc.set_deflate_compression(::png::DeflateCompression::Level(n)),
    }
    let png_err = |e: ::png::EncodingError| match e {
        ::png::EncodingError::IoError(e) => e,
        e => io::Error::other(format!("PNG encoding failed: {e}")),
    };
    let mut writer = enc.write_header().map_err(png_err)?;
    let mut stream = writer.stream_writer().map_err(png_err)?;
    let out_row = w * color.samples() * if depth == BitDepth::Sixteen { 2 } else { 1 };
    let mut row_buf = vec![0u8; out_row];
    // SAFETY: frames handed to this function are not written concurrently
    // (captured frames are read-only; a writable one is borrowed by the caller).
    let data = unsafe { frame.data() };
    let stride = frame.stride();
    for y in 0..h {
        let src = &data[y * stride..y * stride + frame.layout().row_bytes()];
        convert_row(fmt, alpha, src, &mut row_buf);
        stream.write_all(&row_buf)?;
    }
    stream.finish().map_err(png_err)?;
    Ok(())
}

/// One row of `fmt` pixels into PNG order (RGB[A], big-endian 16-bit samples).
fn convert_row(fmt: PixelFormat, alpha: bool, src: &[u8], dst: &mut [u8]) {
    match fmt {
        PixelFormat::Bgra if alpha => {
            for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(4)) {
                d.copy_from_slice(&[s[2], s[1], s[0], s[3]]);
            }
        }
        PixelFormat::Bgra | PixelFormat::Bgrx => {
            for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(3)) {
                d.copy_from_slice(&[s[2], s[1], s[0]]);
            }
        }
        PixelFormat::Rgba if !alpha => {
            for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(3)) {
                d.copy_from_slice(&s[..3]);
            }
        }
        PixelFormat::Bgr => {
            for (s, d) in src.chunks_exact(3).zip(dst.chunks_exact_mut(3)) {
                d.copy_from_slice(&[s[2], s[1], s[0]]);
            }
        }
        PixelFormat::Gray16 | PixelFormat::Rgba16 => {
            // Native little-endian samples -> PNG's big-endian.
            for (s, d) in src.chunks_exact(2).zip(dst.chunks_exact_mut(2)) {
                d.copy_from_slice(&[s[1], s[0]]);
            }
        }
        _ => dst.copy_from_slice(src),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use framebus_core::FramePool;

    fn decode(bytes: &[u8]) -> (::png::OutputInfo, Vec<u8>) {
        let mut r = ::png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    #[test]
    fn bgra_round_trips_at_every_level_and_padding_is_skipped() {
        let pool = FramePool::default();
        // Stride 16 for a 3-pixel BGRA row: 4 bytes of padding per row.
        let mut f = pool
            .acquire_frame(3, 2, PixelFormat::Bgra, Some(16))
            .unwrap();
        let d = f.data_mut().unwrap();
        for (i, b) in d.iter_mut().enumerate() {
            *b = i as u8;
        }
        for level in [0, 1, 6, 9] {
            let mut out = Vec::new();
            write_png(&f, &mut out, level, false).unwrap();
            let (info, px) = decode(&out);
            assert_eq!((info.width, info.height), (3, 2));
            assert_eq!(info.color_type, ::png::ColorType::Rgb);
            assert_eq!(&px[..6], &[2, 1, 0, 6, 5, 4]);
            assert_eq!(&px[9..12], &[18, 17, 16]); // second row starts at byte 16
        }
        let mut out = Vec::new();
        write_png(&f, &mut out, 1, true).unwrap();
        assert_eq!(&decode(&out).1[..4], &[2, 1, 0, 3]);
        let e = write_png(&f, Vec::new(), 10, false).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("10"), "{e}");
    }

    #[test]
    fn gray16_is_written_big_endian() {
        let pool = FramePool::default();
        let mut f = pool.acquire_frame(1, 1, PixelFormat::Gray16, None).unwrap();
        f.data_mut()
            .unwrap()
            .copy_from_slice(&0x1234u16.to_le_bytes());
        let mut out = Vec::new();
        write_png(&f, &mut out, 1, false).unwrap();
        assert_eq!(decode(&out).1, vec![0x12, 0x34]);
    }

    #[test]
    fn bad_input_and_writer_failures_are_io_errors() {
        let pool = FramePool::default();
        let yuv = pool.acquire_frame(4, 4, PixelFormat::Nv12, None).unwrap();
        let e = write_png(&yuv, Vec::new(), 1, false).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(
            e.to_string().contains("NV12") || e.to_string().contains("nv12"),
            "{e}"
        );

        /// A writer whose disk is full.
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(28)) // ENOSPC
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let f = pool.acquire_frame(8, 8, PixelFormat::Bgra, None).unwrap();
        let e = write_png(&f, Full, 1, false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28), "the writer's own error: {e}");
    }
}
