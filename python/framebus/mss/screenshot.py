"""``framebus.mss.screenshot``: ``ScreenShot``, mss 11's image object, over a
framebus Frame.

As in mss 11, ``bgra`` and ``rgb`` are memoryviews and ``raw`` is a deprecated
alias of ``bgra``; here ``bgra`` is a read-only view of the pool slot the X
server wrote (no copy at all), and ``__array_interface__`` points NumPy at that
slot, so ``np.asarray(shot)`` is zero-copy and read-only.

``to_numpy``/``to_torch``/``to_tensorflow``/``to_pil`` do their channel order,
layout and dtype work with framebus kernels, one pass each, never with NumPy
fancy indexing:

* channel order: ``framebus.convert`` (BGRA -> RGB/BGR/RGBA) into a pool slot;
  BGRA is the captured slot itself;
* ``float32`` CHW RGB or BGR: ``framebus.to_tensor`` (BGR by reading the BGRA
  bytes as RGBA), straight from the captured slot;
* CHW ``uint8``: a transposed view (as mss 11);
* any other dtype (float16/64, 4-channel float, HWC float, integers): the
  kernel's uint8 result, then one NumPy ufunc pass into the result array
  (``np.divide(..., out=)``) -- there is no kernel for those.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from .._framebus import Frame, convert, to_tensor
from .exception import ScreenShotError
from .models import Pixel, Pixels, Pos, Region, Size

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy
    import PIL.Image

_CHANNELS = ("BGRA", "BGR", "RGB", "RGBA")
_LAYOUTS = ("HWC", "CHW")


def _check(channels: str, layout: str) -> tuple[str, str]:
    channels, layout = channels.upper(), layout.upper()
    if channels not in _CHANNELS:
        msg = 'Channels must be "BGRA", "BGR", "RGB", or "RGBA"'
        raise ValueError(msg)
    if layout not in _LAYOUTS:
        msg = 'Layout must be "HWC" or "CHW"'
        raise ValueError(msg)
    return channels, layout


def _require(module: str, method: str) -> Any:
    """Import an optional framework on first use, naming it when it is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        msg = f"ScreenShot.{method}() needs {module!r}, which is not installed ({e})"
        raise ImportError(msg, name=module) from e


class ScreenShot:
    """Screenshot object (as ``mss.screenshot.ScreenShot`` 11)."""

    __slots__ = {"__pixels", "__rgb", "_frame", "_raw", "pos", "size"}

    def __init__(self, data: Any, region: Any, /, *, size: Size | None = None) -> None:
        if isinstance(region, Region):
            left, top, width, height = region.left, region.top, region.width, region.height
        else:  # a Monitor or a dict
            left, top = region["left"], region["top"]
            width, height = region["width"], region["height"]
        self.__pixels: Pixels | None = None
        self.__rgb: memoryview | None = None
        #: The framebus Frame holding the pixels (None when built from bytes).
        self._frame: Frame | None = data if isinstance(data, Frame) else None
        #: NamedTuple of the screenshot coordinates.
        self.pos = Pos(left, top)
        #: NamedTuple of the screenshot size.
        self.size = Size(width, height) if size is None else size
        raw = memoryview(data)
        if raw.format != "B" or raw.ndim != 1:
            raw = raw.cast("B")
        expected = self.size.width * self.size.height * 4
        if raw.nbytes != expected:
            # mss 11 asserts the same at construction; mss 10 failed later, in .rgb
            msg = (
                "Data size does not match screenshot dimensions: "
                f"{raw.nbytes} bytes for {self.size.width}x{self.size.height} BGRA "
                f"({expected} expected)"
            )
            raise ValueError(msg)
        self._raw = raw

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
            "data": self._raw,
        }

    @property
    def frame(self) -> Frame | None:
        """The framebus Frame behind this screenshot (framebus extension)."""
        return self._frame

    @classmethod
    def from_size(cls, data: Any, width: int, height: int, /) -> ScreenShot:
        """Instantiate a new class given only screenshot's data and size."""
        return cls(data, Region(0, 0, width, height))

    @property
    def bgra(self) -> memoryview:
        """BGRx pixels as a 1-D memoryview (of the pool slot for captures: no copy)."""
        return self._raw

    @property
    def raw(self) -> memoryview:
        """Deprecated alias for :attr:`bgra` (a memoryview, as in mss 11)."""
        warnings.warn(
            "The raw property is deprecated.  Use bgra instead.", DeprecationWarning, stacklevel=2
        )
        return self._raw

    @property
    def pixels(self) -> Pixels:
        """RGB tuples: a list of rows, each a tuple of (R, G, B) tuples."""
        if self.__pixels is None:
            raw = self._raw
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
        raw = self._raw
        return (raw[i + 2], raw[i + 1], raw[i])

    def _converted(self, dst_format: str) -> Frame:
        """The pixels in ``dst_format``: one ``framebus.convert`` pass into a pool slot."""
        if self._frame is not None:
            return convert(self._frame, self._frame.format, dst_format)
        return convert(self._raw, "BGRA", dst_format, width=self.width, height=self.height)

    @property
    def rgb(self) -> memoryview:
        """RGBRGB... pixels as a 1-D memoryview (cached): ``framebus.convert`` into a slot."""
        if self.__rgb is None:
            self.__rgb = memoryview(self._converted("RGB")).cast("B")
        return self.__rgb

    def _hwc_uint8(self, channels: str) -> numpy.ndarray:
        import numpy as np

        if channels == "BGRA":
            if self._frame is not None:
                return np.asarray(self._frame)  # the captured slot, read-only
            return np.frombuffer(self._raw, np.uint8).reshape(self.height, self.width, 4)
        return np.asarray(self._converted(channels))

    def to_numpy(
        self, channels: str = "RGB", layout: str = "HWC", dtype: Any = None
    ) -> numpy.ndarray:
        """The pixels as a NumPy array.

        :param channels: "BGRA", "BGR", "RGB" (default) or "RGBA".
        :param layout: "HWC" (default) or "CHW".
        :param dtype: default ``np.uint8``; floating dtypes are scaled to [0, 1].

        uint8 results are views of framebus memory (the captured slot for
        BGRA, a converted slot otherwise; CHW is a transposed view, as in mss).
        """
        channels, layout = _check(channels, layout)
        import numpy as np

        dtype = np.dtype(np.uint8 if dtype is None else dtype)
        if dtype == np.float32 and layout == "CHW" and channels in ("RGB", "BGR"):
            # One kernel pass from the BGRA bytes to planar float32; reading them as
            # RGBA puts B first, which is the BGR order.
            src_format = "RGBA" if channels == "BGR" else "BGRA"
            return to_tensor(
                self._raw, src_format=src_format, src_width=self.width, src_height=self.height
            )
        arr = self._hwc_uint8(channels)
        if layout == "CHW":
            arr = arr.transpose(2, 0, 1)
        if dtype == np.uint8:
            return arr
        # NO KERNEL for this dtype/layout/channel combination: one ufunc pass from
        # the kernel's uint8 result into a C-contiguous array of the requested layout.
        out = np.empty(arr.shape, dtype)
        if np.issubdtype(dtype, np.floating):
            np.divide(arr, dtype.type(255), out=out)
        else:
            np.copyto(out, arr, casting="unsafe")
        return out

    def to_pil(self, mode: str = "RGB") -> PIL.Image.Image:
        """A Pillow image in mode "RGB" (default) or "RGBA"."""
        mode = mode.upper()
        if mode not in {"RGB", "RGBA"}:
            msg = "Mode must be 'RGB' or 'RGBA'"
            raise ValueError(msg)
        image = _require("PIL.Image", "to_pil")
        if mode == "RGBA":
            # framebus.convert into a slot that Pillow then maps without a copy.
            rgba = memoryview(self._converted("RGBA")).cast("B")
            return image.frombuffer("RGBA", self.size, rgba, "raw", "RGBA", 0, 1)
        # Pillow stores RGB as 4 bytes a pixel, so it must copy: its BGRX unpacker
        # does that copy and the channel order in the same single pass.
        return image.frombuffer("RGB", self.size, self._raw, "raw", "BGRX", 0, 1)

    def to_torch(
        self,
        channels: str = "RGB",
        layout: str = "CHW",
        dtype: Any = None,
        device: Any = None,
    ) -> Any:
        """The pixels as a PyTorch tensor (CHW by default; float dtypes scaled to [0, 1]).

        :param dtype: a ``torch.dtype``; default ``torch.get_default_dtype()``.
        :param device: default ``torch.get_default_device()``.

        On the CPU, uint8/float16/float32/float64 come from :meth:`to_numpy`
        (framebus kernels) without another copy. On a CUDA device, when
        ``framebus.cuda`` is available, the captured slot is uploaded by
        ``Frame.to_device`` with the channel order (and, for float32 CHW RGB,
        the scaling) done by a GPU kernel, and handed to torch by DLPack
        without a copy. Otherwise the uint8 pixels (channel order and layout
        done by the kernel) are uploaded by torch and the dtype is converted
        there.
        """
        channels, layout = _check(channels, layout)
        torch = _require("torch", "to_torch")
        import numpy as np

        if dtype is None:
            torch_dtype = torch.get_default_dtype()
        elif isinstance(dtype, torch.dtype):
            torch_dtype = dtype
        else:
            msg = 'argument "dtype" must be a torch.dtype'
            raise TypeError(msg)
        if device is not None:
            torch_device = torch.device(device)
        elif hasattr(torch, "get_default_device"):
            torch_device = torch.get_default_device()
        else:  # torch < 2.3
            torch_device = torch.device("cpu")

        numpy_dtypes = {
            torch.uint8: np.uint8,
            torch.float16: np.float16,
            torch.float32: np.float32,
            torch.float64: np.float64,
        }
        if torch_device.type == "cpu" and torch_dtype in numpy_dtypes:
            arr = self.to_numpy(channels, layout, numpy_dtypes[torch_dtype])
            if not arr.flags.writeable:  # the read-only captured slot (BGRA uint8)
                arr = arr.copy()
            return torch.from_numpy(arr)

        if torch_device.type == "cuda":
            rv = self._to_torch_framebus_cuda(torch, channels, layout, torch_dtype, torch_device)
            if rv is not None:
                return rv
        # Upload uint8 HWC (a quarter of float32's bytes), then layout and dtype on the device.
        arr = self.to_numpy(channels, "HWC")
        with warnings.catch_warnings():
            # The read-only slot is only read: .to() copies it (another device, or
            # another dtype since uint8 on the CPU returned above) before anyone writes.
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            rv = torch.from_numpy(arr).to(device=torch_device)
        if layout == "CHW":
            rv = rv.permute(2, 0, 1)
        rv = rv.to(dtype=torch_dtype)
        if torch_dtype.is_floating_point:
            rv.div_(255.0)
        return rv

    def _to_torch_framebus_cuda(
        self, torch: Any, channels: str, layout: str, dtype: Any, device: Any
    ) -> Any:
        """``to_torch`` on a CUDA device through framebus's GPU path
        (docs/gpu.md), or None when it does not apply (framebus.cuda
        unavailable, no captured slot, RGBA).

        ``Frame.to_device`` copies the captured slot (asynchronously, on a
        framebus stream; the slot is held until the copy completed) and does
        the channel order -- and for float32 CHW RGB the scaling to [0, 1] --
        in the same GPU kernel; ``torch.from_dlpack`` then takes the device
        buffer without a copy, its current stream waiting for the upload.
        Other layouts and dtypes finish on the device with torch.
        """
        if self._frame is None or channels == "RGBA":
            return None
        import framebus.cuda as fcuda

        if not fcuda.is_available():
            return None
        index = device.index if device.index is not None else torch.cuda.current_device()
        if dtype == torch.float32 and layout == "CHW" and channels == "RGB":
            # (v / 255 - 0) / 1 in float32: the bits of torch's uint8 / 255.0.
            return torch.from_dlpack(self._frame.to_device(index, format="RGB_F32_CHW"))
        fmt = None if channels == "BGRA" else channels
        rv = torch.from_dlpack(self._frame.to_device(index, format=fmt))
        if layout == "CHW":
            rv = rv.permute(2, 0, 1)
        if dtype == torch.uint8:
            return rv
        rv = rv.to(dtype=dtype)
        if dtype.is_floating_point:
            rv.div_(255.0)
        return rv

    def to_tensorflow(
        self, channels: str = "RGB", layout: str = "HWC", dtype: Any = "float32"
    ) -> Any:
        """The pixels as a TensorFlow tensor (HWC by default; float dtypes scaled to [0, 1]).

        Channel order and layout by framebus kernels (uint8); TensorFlow copies
        that in and casts (on its device, as mss 11 does).
        """
        channels, layout = _check(channels, layout)
        tf = _require("tensorflow", "to_tensorflow")
        tf_dtype = tf.as_dtype(dtype)
        rv = tf.convert_to_tensor(self.to_numpy(channels, layout))
        if tf_dtype != tf.uint8:
            rv = tf.cast(rv, dtype=tf_dtype)
            if tf_dtype.is_floating:
                rv /= 255.0
        return rv

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
