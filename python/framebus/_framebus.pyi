# Type stubs for the compiled module framebus._framebus.
# One section per feature; keep them in sync with crates/framebus-python/src/*.rs.
import sys
from typing import Any

from typing_extensions import Self

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    from typing_extensions import Buffer

__version__: str

# --- errors ---
class FramebusError(Exception): ...
class PoolExhausted(FramebusError): ...
class PoolClosed(FramebusError): ...
class ChannelClosed(FramebusError): ...
class CaptureError(FramebusError): ...

# --- frame ---
class Frame(Buffer):
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def stride(self) -> int: ...
    @property
    def format(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def readonly(self) -> bool: ...
    @property
    def released(self) -> bool: ...
    @property
    def address(self) -> int: ...
    @property
    def slot_id(self) -> int: ...
    @property
    def __array_interface__(self) -> dict[str, Any]: ...
    def release(self) -> None: ...
    def copy(self) -> Frame: ...
    def as_readonly(self) -> Frame: ...
    def to_numpy(self, copy: bool = False) -> Any: ...
    def __dlpack__(
        self,
        *,
        stream: Any | None = None,
        max_version: tuple[int, int] | None = None,
        dl_device: tuple[int, int] | None = None,
        copy: bool | None = None,
    ) -> Any: ...
    def __dlpack_device__(self) -> tuple[int, int]: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> bool: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...

def formats() -> list[str]: ...

# --- pool ---
class FramePool:
    def __init__(
        self,
        max_bytes: int | None = None,
        max_slots: int | None = None,
        on_exhausted: str = "raise",
        timeout: float | None = None,
        huge_pages: bool = False,
    ) -> None: ...
    def acquire(
        self,
        width: int,
        height: int,
        format: str = "BGRA",
        stride: int | None = None,
        timeout: float | None = None,
    ) -> Frame: ...
    def stats(self) -> dict[str, int | bool | None]: ...
    def trim(self) -> int: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> bool: ...

def default_pool() -> FramePool: ...

# --- kernels ---
# Frame methods of this feature (defined in crates/framebus-python/src/kernels.rs);
# they belong in `class Frame` above:
#     def convert(self, format: str, out: Buffer | Frame | None = None, *, matrix: str = "bt601",
#                 range: str = "limited", threads: int | None = None,
#                 simd: str | None = None) -> Any: ...
#     def resize(self, width: int, height: int, method: str = "bilinear",
#                format: str | None = None, out: Buffer | Frame | None = None, *,
#                matrix: str = "bt601", range: str = "limited", threads: int | None = None,
#                simd: str | None = None) -> Any: ...
#     def to_tensor(self, size: tuple[int, int] | None = None,
#                   mean: float | tuple[float, float, float] | None = None,
#                   std: float | tuple[float, float, float] | None = None,
#                   method: str = "area", *, threads: int | None = None,
#                   simd: str | None = None) -> Any: ...
def convert(
    src: Buffer | Frame,
    src_format: str | None,
    dst_format: str,
    out: Buffer | Frame | None = None,
    *,
    width: int | None = None,
    height: int | None = None,
    stride: int | None = None,
    matrix: str = "bt601",
    range: str = "limited",
    threads: int | None = None,
    simd: str | None = None,
    pool: FramePool | None = None,
) -> Any: ...
def resize(
    src: Buffer | Frame,
    width: int,
    height: int,
    method: str = "bilinear",
    src_format: str | None = None,
    format: str | None = None,
    out: Buffer | Frame | None = None,
    *,
    src_width: int | None = None,
    src_height: int | None = None,
    src_stride: int | None = None,
    matrix: str = "bt601",
    range: str = "limited",
    threads: int | None = None,
    simd: str | None = None,
    pool: FramePool | None = None,
) -> Any: ...
def to_tensor(
    src: Buffer | Frame,
    size: tuple[int, int] | None = None,
    mean: float | tuple[float, float, float] | None = None,
    std: float | tuple[float, float, float] | None = None,
    method: str = "area",
    src_format: str | None = None,
    *,
    src_width: int | None = None,
    src_height: int | None = None,
    src_stride: int | None = None,
    threads: int | None = None,
    simd: str | None = None,
) -> Any: ...
def simd_levels() -> list[str]: ...
def simd_level(simd: str | None = None) -> str: ...
def image_nbytes(width: int, height: int, format: str, stride: int | None = None) -> int: ...

# --- pipe ---
# (imports kept in this section so the sections stay independent)
import os  # noqa: E402
import pathlib  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Protocol  # noqa: E402

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

class SupportsFileno(Protocol):
    def fileno(self) -> int: ...

class FFmpegError(FramebusError):
    stderr: str

def pipe(obj: Buffer | Frame, fd: int | SupportsFileno, *, splice: bool | None = None) -> None: ...
def sync(obj: object | None = None, fd: int | SupportsFileno | None = None) -> None: ...
def close(fd: int | SupportsFileno) -> None: ...
def pipe_stats(fd: int | SupportsFileno) -> dict[str, int | bool | None] | None: ...

class VideoWriter:
    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        fps: float,
        format: str = "BGRA",
        codec: str = "libx264",
        preset: str | None = None,
        crf: int | None = None,
        pix_fmt: str | None = None,
        extra_args: Sequence[str] | None = None,
        ffmpeg: str | os.PathLike[str] | None = None,
        queue_depth: int = 8,
        splice: bool = True,
    ) -> None: ...
    def write(self, frame: Buffer | Frame) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> bool: ...
    @property
    def frames_written(self) -> int: ...
    @property
    def command(self) -> list[str]: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def path(self) -> pathlib.Path: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def fps(self) -> float: ...
    @property
    def format(self) -> str: ...
