"""``framebus.mss.tools``: ``to_png`` and ``parse_edid`` with mss's signatures and output.

The encoder is written out here (PNG is a small format): 8-bit RGB, filter 0
on every row, one zlib stream at ``level``. With the same input and level it
produces byte-for-byte what ``mss.tools.to_png`` produces. For a framebus
frame, ``Frame.save_png`` is much faster (Rust, fast deflate, no RGB copy).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + tag
        + payload
        + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF)
    )


# EDID base block layout (VESA E-EDID; the fields mss reads).
_EDID_BLOCK_LEN = 128
_EDID_HEADER = b"\x00\xff\xff\xff\xff\xff\xff\x00"
_EDID_WEEK_MEANS_MODEL_YEAR = 0xFF
_EDID_YEAR_BASE = 1990
_EDID_DESCRIPTORS = (0x48, 0x5A, 0x6C)  # 18-byte display descriptors
_EDID_DESCRIPTOR_TAGS = {0xFF: "serial_number", 0xFC: "display_name"}


def parse_edid(edid_data: bytes) -> dict[str, int | str]:
    """Parse a monitor's EDID block as ``mss.tools.parse_edid`` does.

    Returns ``{}`` when the block is short, has a bad checksum or header; else
    ``id_legacy`` (manufacturer PnP ID + product code as 4 hex digits) and,
    when present, ``serial_number`` (int, or the string descriptor, which
    wins), ``manufacture_week``, ``manufacture_year`` or ``model_year``, and
    ``display_name``. Extension blocks are not read.
    """
    if len(edid_data) < _EDID_BLOCK_LEN:
        return {}
    block = bytes(edid_data[:_EDID_BLOCK_LEN])
    if sum(block) % 256 != 0:
        return {}
    header, mfr, product, serial, week, year = struct.unpack("<8sHHIBB", block[:18])
    if header != _EDID_HEADER:
        return {}
    mfr = (mfr >> 8) | ((mfr & 0xFF) << 8)  # big-endian, three 5-bit letters
    letters = "".join(chr(((mfr >> shift) % 32) + 64) for shift in (10, 5, 0))
    out: dict[str, int | str] = {"id_legacy": f"{letters}{product:04X}"}
    if serial != 0:
        out["serial_number"] = serial
    if week == _EDID_WEEK_MEANS_MODEL_YEAR:
        out["model_year"] = year + _EDID_YEAR_BASE
    else:
        if week != 0:
            out["manufacture_week"] = week
        out["manufacture_year"] = year + _EDID_YEAR_BASE
    for offset in _EDID_DESCRIPTORS:
        descr = block[offset : offset + 18]
        key = _EDID_DESCRIPTOR_TAGS.get(descr[3])
        if key is None or any(descr[i] for i in (0, 1, 2, 4)):
            continue  # not a display descriptor we read
        text = descr[5:18].partition(b"\x0a")[0].rstrip(b" ")
        out[key] = text.decode("ascii", errors="replace")
    return out


def to_png(
    data: bytes,
    size: tuple[int, int],
    /,
    *,
    level: int = 6,
    output: Path | str | None = None,
) -> bytes | None:
    """Dump RGBRGB... ``data`` of ``size`` (width, height) as PNG.

    With ``output`` None, return the PNG bytes; else write the file (flushed
    and fsynced, as mss does) and return None.
    """
    width, height = size
    line = width * 3
    view = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else data
    scanlines = b"".join(b"\x00" + bytes(view[y * line : y * line + line]) for y in range(height))
    png = b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", struct.pack(">2I5B", width, height, 8, 2, 0, 0, 0)),
            _chunk(b"IDAT", zlib.compress(scanlines, level)),
            _chunk(b"IEND", b""),
        )
    )
    if not output:
        return png
    with open(output, "wb") as f:
        f.write(png)
        f.flush()
        os.fsync(f.fileno())
    return None
