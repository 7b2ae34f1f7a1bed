//! The wire format (docs/zenoh.md): pixels in the payload, geometry in the attachment.
//!
//! The attachment is one JSON object, so any Zenoh program reads it with its
//! language's JSON parser:
//!
//! ```text
//! {"framebus":1,"width":1920,"height":1080,"stride":7680,"format":"BGRA",
//!  "timestamp_ns":123,"unix_ns":1796225574425060352,"seq":7,"encoding":"lz4",
//!  "parts":[[51234,4194304],...]}
//! ```
//!
//! * `timestamp_ns` is the sender's `CLOCK_MONOTONIC`; `unix_ns` is the same
//!   instant on the sender's wall clock (`CLOCK_REALTIME`, ns since the Unix
//!   epoch). A receiver whose clocks differ from the sender's by more than
//!   [`SAME_CLOCK_NS`] (another host) re-bases the frame's timestamp onto its
//!   own `CLOCK_MONOTONIC` through `unix_ns` ([`local_timestamp_ns`]), so
//!   `now - timestamp` is the frame's age on either side, as exact as the two
//!   hosts' wall clocks agree (NTP, PTP).
//!
//! * `raw`: the payload is the frame's `stride × height` bytes (planar YUV:
//!   the layout's byte length), exactly.
//! * `lz4` / `zstd`: the raw bytes cut into parts of at most [`PART_BYTES`],
//!   each compressed on its own (in parallel): an LZ4 *block* (no frame
//!   header; `lz4.block.decompress(p, uncompressed_size=n)`) or a zstd frame.
//!   `parts` lists `[compressed, raw]` byte counts in payload order.
//! * `jpeg`: the payload is one baseline JPEG file; the receiver decodes it
//!   into the sent format with a tight stride (`width × bytes per pixel`);
//!   alpha is not carried (decoded as 255).

use crate::error::{Result, ZenohError};
use framebus_core::{FrameLayout, PixelFormat};
use serde_json::{json, Value};

/// Version of the attachment's fields.
pub const WIRE_VERSION: u64 = 1;
/// Raw bytes per independently compressed part (the unit of parallel work).
pub const PART_BYTES: usize = 4 << 20;
/// Two hosts whose `CLOCK_REALTIME − CLOCK_MONOTONIC` differ by less than
/// this are taken to share one monotonic clock (one host; NTP slewing moves
/// the difference by at most 0.5 ms per second): their timestamps are kept.
pub const SAME_CLOCK_NS: i128 = 1_000_000;

/// `CLOCK_REALTIME − CLOCK_MONOTONIC` on this host now, in ns: added to a
/// monotonic timestamp it gives that instant's Unix time.
pub fn realtime_offset_ns() -> i128 {
    let mono = framebus_core::monotonic_ns();
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    real - i128::from(mono)
}

/// The `unix_ns` a sender puts beside `timestamp_ns` (this host's
/// `CLOCK_MONOTONIC`); none for a frame without a timestamp (0).
pub fn unix_ns(timestamp_ns: u64) -> Option<u64> {
    (timestamp_ns != 0).then(|| {
        (i128::from(timestamp_ns) + realtime_offset_ns()).clamp(0, i128::from(u64::MAX)) as u64
    })
}

/// The sender's `timestamp_ns` on this host's `CLOCK_MONOTONIC`, given the
/// frame's `unix_ns` and this host's [`realtime_offset_ns`] (`here`): kept as
/// it is when there is no `unix_ns` or both ends share a clock (within
/// [`SAME_CLOCK_NS`]), else `unix_ns − here` (0 for an instant before this
/// host's boot).
pub fn local_timestamp_ns(timestamp_ns: u64, unix_ns: Option<u64>, here: i128) -> u64 {
    let Some(unix) = unix_ns else {
        return timestamp_ns;
    };
    let there = i128::from(unix) - i128::from(timestamp_ns);
    if (there - here).abs() < SAME_CLOCK_NS {
        return timestamp_ns;
    }
    (i128::from(unix) - here).clamp(0, i128::from(u64::MAX)) as u64
}

/// How the pixels travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The pixels as they are (LAN).
    Raw,
    /// LZ4 blocks: lossless, ~GB/s, good on screen content.
    Lz4,
    /// zstd frames at `level` (1..=22): lossless, smaller and slower than LZ4.
    Zstd { level: i32 },
    /// Baseline JPEG at `quality` (1..=100): lossy, 8-bit colour and grey formats.
    Jpeg { quality: u8 },
}

impl Encoding {
    pub const NAMES: [&'static str; 4] = ["raw", "lz4", "zstd", "jpeg"];

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Lz4 => "lz4",
            Encoding::Zstd { .. } => "zstd",
            Encoding::Jpeg { .. } => "jpeg",
        }
    }

    /// `name` with a `quality`: JPEG's 1..=100, zstd's level 1..=22 (default 3).
    pub fn parse(name: &str, quality: Option<i64>) -> Result<Encoding> {
        let bad_q = |why: &str| ZenohError::InvalidArgument {
            what: "quality",
            value: quality.map_or("None".into(), |q| q.to_string()),
            why: why.into(),
        };
        match name {
            "raw" | "lz4" if quality.is_some() => Err(bad_q("only jpeg and zstd take a quality")),
            "raw" => Ok(Encoding::Raw),
            "lz4" => Ok(Encoding::Lz4),
            "zstd" => match quality.unwrap_or(3) {
                q @ 1..=22 => Ok(Encoding::Zstd { level: q as i32 }),
                _ => Err(bad_q("zstd's level is 1..=22")),
            },
            "jpeg" => match quality.unwrap_or(90) {
                q @ 1..=100 => Ok(Encoding::Jpeg { quality: q as u8 }),
                _ => Err(bad_q("jpeg's quality is 1..=100")),
            },
            _ => Err(ZenohError::InvalidArgument {
                what: "encoding",
                value: format!("{name:?}"),
                why: format!("expected one of {}", Encoding::NAMES.join(", ")),
            }),
        }
    }

    /// Whether frames of `format` can travel in this encoding.
    pub fn check_format(self, format: PixelFormat) -> Result<()> {
        if let Encoding::Jpeg { .. } = self {
            if jpeg_color(format).is_none() {
                return Err(ZenohError::InvalidArgument {
                    what: "format",
                    value: format.name().into(),
                    why: "jpeg carries BGRA, BGRX, RGBA, RGB, BGR and GRAY8 frames; \
                          use raw, lz4 or zstd"
                        .into(),
                });
            }
        }
        Ok(())
    }
}

/// What the attachment says about a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub layout: FrameLayout,
    pub timestamp_ns: u64,
    /// `timestamp_ns` on the sender's wall clock (see the module's doc).
    pub unix_ns: Option<u64>,
    pub seq: u64,
    pub encoding: &'static str,
    /// `[compressed, raw]` byte counts of each part (lz4, zstd).
    pub parts: Parts,
}

impl Meta {
    pub fn to_json(&self) -> Vec<u8> {
        let l = &self.layout;
        let mut v = json!({
            "framebus": WIRE_VERSION,
            "width": l.width,
            "height": l.height,
            "stride": l.stride,
            "format": l.format.name(),
            "timestamp_ns": self.timestamp_ns,
            "seq": self.seq,
            "encoding": self.encoding,
        });
        if let Some(u) = self.unix_ns {
            v["unix_ns"] = Value::from(u);
        }
        if !self.parts.is_empty() {
            v["parts"] = Value::from(
                self.parts
                    .iter()
                    .map(|&(c, r)| json!([c, r]))
                    .collect::<Vec<_>>(),
            );
        }
        v.to_string().into_bytes()
    }

    /// Parse and range-check an attachment from the network.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Meta, String> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("attachment is not JSON ({e})"))?;
        let obj = v.as_object().ok_or("attachment is not a JSON object")?;
        let int = |k: &str| -> std::result::Result<u64, String> {
            obj.get(k)
                .ok_or_else(|| format!("attachment has no {k:?}"))?
                .as_u64()
                .ok_or_else(|| format!("attachment's {k:?} is not a non-negative integer"))
        };
        let size = |k: &str| -> std::result::Result<usize, String> {
            usize::try_from(int(k)?).map_err(|_| format!("attachment's {k:?} is too large"))
        };
        let s = |k: &str| -> std::result::Result<&str, String> {
            obj.get(k)
                .ok_or_else(|| format!("attachment has no {k:?}"))?
                .as_str()
                .ok_or_else(|| format!("attachment's {k:?} is not a string"))
        };
        match obj.get("framebus").and_then(Value::as_u64) {
            Some(WIRE_VERSION) => {}
            other => {
                return Err(format!(
                    "attachment's \"framebus\" version is {other:?}, expected 1"
                ))
            }
        }
        let format: PixelFormat = s("format")?.parse().map_err(|e| format!("{e}"))?;
        let (w, h) = (size("width")?, size("height")?);
        let stride = match obj.get("stride") {
            None | Some(Value::Null) => None,
            Some(_) => Some(size("stride")?),
        };
        let layout = FrameLayout::new(w, h, format, stride).map_err(|e| e.to_string())?;
        let encoding = match s("encoding")? {
            "raw" => "raw",
            "lz4" => "lz4",
            "zstd" => "zstd",
            "jpeg" => "jpeg",
            other => return Err(format!("unknown encoding {other:?}")),
        };
        let mut parts = Vec::new();
        if let Some(p) = obj.get("parts") {
            let arr = p.as_array().ok_or("attachment's \"parts\" is not a list")?;
            for item in arr {
                let pair = item
                    .as_array()
                    .filter(|a| a.len() == 2)
                    .and_then(|a| Some((a[0].as_u64()? as usize, a[1].as_u64()? as usize)))
                    .ok_or("attachment's \"parts\" must hold [compressed, raw] pairs")?;
                parts.push(pair);
            }
        }
        Ok(Meta {
            layout,
            timestamp_ns: obj.get("timestamp_ns").and_then(Value::as_u64).unwrap_or(0),
            unix_ns: match obj.get("unix_ns") {
                None | Some(Value::Null) => None,
                Some(_) => Some(int("unix_ns")?),
            },
            seq: obj.get("seq").and_then(Value::as_u64).unwrap_or(0),
            encoding,
            parts,
        })
    }
}

/// The JPEG colour type of a format, if JPEG can carry it.
pub(crate) fn jpeg_color(f: PixelFormat) -> Option<jpeg_encoder::ColorType> {
    use jpeg_encoder::ColorType as C;
    Some(match f {
        PixelFormat::Bgra | PixelFormat::Bgrx => C::Bgra,
        PixelFormat::Rgba => C::Rgba,
        PixelFormat::Rgb => C::Rgb,
        PixelFormat::Bgr => C::Bgr,
        PixelFormat::Gray8 => C::Luma,
        _ => return None,
    })
}

/// `[compressed, raw]` byte counts of each part.
pub type Parts = Vec<(usize, usize)>;

/// Compress `raw` in parts of [`PART_BYTES`], in parallel; returns the payload
/// and the `[compressed, raw]` sizes.
pub(crate) fn compress(enc: Encoding, raw: &[u8]) -> Result<(Vec<u8>, Parts)> {
    use rayon::prelude::*;
    let chunks: Vec<&[u8]> = raw.chunks(PART_BYTES).collect();
    let outs: Vec<Result<Vec<u8>>> = chunks
        .par_iter()
        .map(|c| match enc {
            Encoding::Lz4 => Ok(lz4_flex::block::compress(c)),
            Encoding::Zstd { level } => {
                zstd::bulk::compress(c, level).map_err(|e| ZenohError::Encode {
                    encoding: "zstd",
                    why: e.to_string(),
                })
            }
            _ => Err(ZenohError::Encode {
                encoding: enc.name(),
                why: "not a compression".into(),
            }),
        })
        .collect();
    let mut payload = Vec::with_capacity(outs.iter().map(|o| o.as_ref().map_or(0, Vec::len)).sum());
    let mut parts = Vec::with_capacity(outs.len());
    for (o, c) in outs.into_iter().zip(&chunks) {
        let o = o?;
        parts.push((o.len(), c.len()));
        payload.extend_from_slice(&o);
    }
    Ok((payload, parts))
}

/// Decompress `payload` (parts as listed) into `out`, in parallel.
pub(crate) fn decompress(
    encoding: &str,
    payload: &[u8],
    parts: &[(usize, usize)],
    out: &mut [u8],
) -> std::result::Result<(), String> {
    use rayon::prelude::*;
    // Checked sums: the sizes come from the network, and a wrapped sum that
    // matched would make a split below go past the end (a panic).
    let sum = |f: fn(&(usize, usize)) -> usize| {
        parts
            .iter()
            .try_fold(0usize, |a, p| a.checked_add(f(p)))
            .unwrap_or(usize::MAX)
    };
    let (total_c, total_r) = (sum(|p| p.0), sum(|p| p.1));
    if total_c != payload.len() || total_r != out.len() {
        return Err(format!(
            "parts add up to {total_c} compressed / {total_r} raw bytes, payload has {} and the frame {}",
            payload.len(),
            out.len()
        ));
    }
    let mut jobs = Vec::with_capacity(parts.len());
    let (mut src, mut dst) = (payload, out);
    for &(c, r) in parts {
        let (s, rest_s) = src.split_at(c);
        let (d, rest_d) = std::mem::take(&mut dst).split_at_mut(r);
        jobs.push((s, d));
        src = rest_s;
        dst = rest_d;
    }
    jobs.into_par_iter()
        .try_for_each(|(s, d)| -> std::result::Result<(), String> {
            let n = match encoding {
                "lz4" => lz4_flex::block::decompress_into(s, d).map_err(|e| format!("lz4: {e}"))?,
                "zstd" => {
                    zstd::bulk::decompress_to_buffer(s, d).map_err(|e| format!("zstd: {e}"))?
                }
                _ => return Err(format!("{encoding} is not a compression")),
            };
            if n != d.len() {
                return Err(format!(
                    "{encoding} part gave {n} bytes, expected {}",
                    d.len()
                ));
            }
            Ok(())
        })
}

/// Encode a frame's rows as JPEG (tight rows; a padded stride is repacked).
pub(crate) fn jpeg_encode(layout: &FrameLayout, data: &[u8], quality: u8) -> Result<Vec<u8>> {
    let err = |why: String| ZenohError::Encode {
        encoding: "jpeg",
        why,
    };
    let color =
        jpeg_color(layout.format).ok_or_else(|| err(format!("format {}", layout.format)))?;
    let (w, h) = (
        u16::try_from(layout.width).map_err(|_| err(format!("width {} > 65535", layout.width)))?,
        u16::try_from(layout.height)
            .map_err(|_| err(format!("height {} > 65535", layout.height)))?,
    );
    let row = layout.row_bytes();
    let tight;
    let pixels: &[u8] = if layout.stride == row {
        &data[..row * layout.height]
    } else {
        tight = data
            .chunks(layout.stride)
            .take(layout.height)
            .flat_map(|r| &r[..row])
            .copied()
            .collect::<Vec<u8>>();
        &tight
    };
    let mut out = Vec::with_capacity(row * layout.height / 8);
    let enc = jpeg_encoder::Encoder::new(&mut out, quality);
    enc.encode(pixels, w, h, color)
        .map_err(|e| err(e.to_string()))?;
    Ok(out)
}

/// Decode a JPEG into `out` (tight rows of `layout`'s format).
pub(crate) fn jpeg_decode(
    layout: &FrameLayout,
    payload: &[u8],
    out: &mut [u8],
) -> std::result::Result<(), String> {
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let cs = match layout.format {
        PixelFormat::Bgra | PixelFormat::Bgrx => ColorSpace::BGRA,
        PixelFormat::Rgba => ColorSpace::RGBA,
        PixelFormat::Rgb => ColorSpace::RGB,
        PixelFormat::Bgr => ColorSpace::BGR,
        PixelFormat::Gray8 => ColorSpace::Luma,
        f => return Err(format!("jpeg cannot carry {f}")),
    };
    let opts = DecoderOptions::default()
        .jpeg_set_out_colorspace(cs)
        .set_max_width(1 << 16)
        .set_max_height(1 << 16);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(payload, opts);
    dec.decode_headers().map_err(|e| format!("jpeg: {e:?}"))?;
    let (w, h) = dec.dimensions().ok_or("jpeg: no dimensions")?;
    if (w, h) != (layout.width, layout.height) {
        return Err(format!(
            "jpeg is {w}x{h}, attachment says {}x{}",
            layout.width, layout.height
        ));
    }
    let need = dec.output_buffer_size().ok_or("jpeg: no output size")?;
    if need != out.len() {
        return Err(format!(
            "jpeg decodes to {need} bytes, the frame has {}",
            out.len()
        ));
    }
    dec.decode_into(out).map_err(|e| format!("jpeg: {e:?}"))
}
