"""``framebus.mss.screenshot``: ``ScreenShot``, mss 10.2's image object, over a
framebus Frame.

Differences from mss, all on the side of not copying: ``raw`` is a read-only
1-D memoryview of the pool slot (mss: a fresh ``bytearray``), and
``__array_interface__`` points NumPy at the slot itself, so ``np.asarray(shot)``
is zero-copy and read-only (``np.array(shot)`` copies, as with mss). Built from
bytes (``ScreenShot(data, monitor)``, ``from_size``) it behaves exactly like
mss's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._framebus import Frame
from .exception import ScreenShotError
from .models import Monitor, Pixel, Pixels, Pos, Size

if TYPE_CHECKING:
    from collections.abc import Iterator

try:  # the pixel-kernels feature's SIMD converter, when it is built in
    from .._framebus import convert as _convert
except ImportError:
    _convert = None


def _bgra_to_rgb(raw: Any, width: int, height: int) -> bytes:
    """RGBRGB... bytes from BGRA pixels (one pass + the copy into ``bytes``)."""
    # RGB CONVERSION: framebus._framebus.convert (pixel-kernels feature) when it
    # exists, else one NumPy copy per channel (about 3x faster than mss's
    # bytearray slicing, see shared/bench/README.md).
    if _convert is not None and isinstance(raw, Frame):
        try:
            return bytes(_convert(raw, "BGRA", "RGB"))
        except (TypeError, ValueError):
            pass  # another signature than expected: fall back to NumPy
    import numpy as np

    src = np.frombuffer(raw, np.uint8).reshape(height, width, 4)
    out = np.empty((height, width, 3), np.uint8)
    out[..., 0] = src[..., 2]
    out[..., 1] = src[..., 1]
    out[..., 2] = src[..., 0]
    return out.tobytes()


class ScreenShot:
    """Screenshot object (as ``mss.screenshot.ScreenShot``)."""

    __slots__ = {"__pixels", "__rgb", "_frame", "pos", "raw", "size"}

    def __init__(self, data: Any, monitor: Monitor, /, *, size: Size | None = None) -> None:
        self.__pixels: Pixels | None = None
        self.__rgb: bytes | None = None
        #: The framebus Frame holding the pixels (None when built from bytes).
        self._frame: Frame | None = data if isinstance(data, Frame) else None
        #: The raw BGRA pixels: a read-only view of the slot for captured frames.
        self.raw = memoryview(data).cast("B") if self._frame is not None else data
        #: NamedTuple of the screenshot coordinates.
        self.pos = Pos(monitor["left"], monitor["top"])
        #: NamedTuple of the screenshot size.
        self.size = Size(monitor["width"], monitor["height"]) if size is None else size

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pos={self.left},{self.top} size={self.width}x{self.height}>"

    @property
    def __array_interface__(self) -> dict[str, Any]:
        """NumPy array interface, HWC BGRA; zero-copy onto the slot for captures."""
        if self._frame is not None:
            return self._frame.__array_interface__
        return {
            "version": 3,
            "shape": (self.height, self.width, 4),
            "typestr": "|u1",
            "data": self.raw,
        }

    @property
    def frame(self) -> Frame | None:
        """The framebus Frame behind this screenshot (framebus extension)."""
        return self._frame

    @classmethod
    def from_size(cls, data: bytearray, width: int, height: int, /) -> ScreenShot:
        """Instantiate a new class given only screenshot's data and size."""
        monitor = {"left": 0, "top": 0, "width": width, "height": height}
        return cls(data, monitor)

    @property
    def bgra(self) -> bytes:
        """BGRx values from the BGRx raw pixels (a bytes copy, as mss)."""
        return bytes(self.raw)

    @property
    def pixels(self) -> Pixels:
        """RGB tuples: a list of rows, each a tuple of (R, G, B) tuples."""
        if not self.__pixels:
            raw = self.raw
            rgb_tuples: Iterator[Pixel] = zip(raw[2::4], raw[1::4], raw[::4])
            self.__pixels = list(zip(*[iter(rgb_tuples)] * self.width))
        return self.__pixels

    def pixel(self, coord_x: int, coord_y: int) -> Pixel:
        """The (R, G, B) pixel at a position (Python-style negative indices work, as in mss)."""
        w, h = self.width, self.height
        if not (-w <= coord_x < w and -h <= coord_y < h):
            msg = f"Pixel location ({coord_x}, {coord_y}) is out of range."
            raise ScreenShotError(msg)
        i = ((coord_y % h) * w + (coord_x % w)) * 4
        raw = self.raw
        return (raw[i + 2], raw[i + 1], raw[i])

    @property
    def rgb(self) -> bytes:
        """RGBRGB... bytes computed from the BGRA pixels (cached)."""
        if not self.__rgb:
            source = self._frame if self._frame is not None else self.raw
            self.__rgb = _bgra_to_rgb(source, self.width, self.height)
        return self.__rgb

    @property
    def top(self) -> int:
        return self.pos.top

    @property
    def left(self) -> int:
        return self.pos.left

    @property
    def width(self) -> int:
        return self.size.width

    @property
    def height(self) -> int:
        return self.size.height
