"""``framebus.mss.tools``: ``to_png`` with mss 10.2's signature and output.

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
