"""framebus.cuda: frames on NVIDIA GPUs (docs/gpu.md).

The CUDA driver is loaded the first time something here needs it, so importing
this module is cheap and works on machines with no GPU; ``is_available()`` says
whether CUDA can be used and every other entry point raises
``framebus.CudaUnavailable`` naming what is missing (driver library, device,
newer driver, NVRTC).

* ``Frame.to_device("cuda:0", stream=None, format=None, mean=, std=, pool=)``
  uploads a frame asynchronously (converted on the GPU when ``format`` is given)
  and returns a ``CudaFrame``;
* ``FramePool(pinned="cuda:0")`` pins every slot once for fast uploads;
* ``DevicePool`` bounds and reuses device buffers;
* ``CudaFrame`` exports by DLPack (``torch.from_dlpack``, ``cupy.from_dlpack``)
  and ``__cuda_array_interface__``, and copies back with ``to_host()``;
* ``DeviceFrames(source, device=, format=, size=, ...)`` turns a frame source
  (``Capture``, a channel or Zenoh ``Subscriber``) into one of ``CudaFrame``s,
  each uploaded (and converted) on a framebus stream as it arrives;
  ``Capture(..., device=)`` and ``Subscriber(..., device=)`` do this
  themselves (pinned host slots, ``CudaFrame``s out); ``capture(...)`` is
  ``Capture(..., device="cuda:0")``.

Environment: ``FRAMEBUS_CUDA_DRIVER`` (the driver library, default
``libcuda.so.1``), ``FRAMEBUS_CUDA_NVRTC`` (NVRTC, default ``libnvrtc.so.12``
or the one of the ``nvidia-cuda-nvrtc-cu12`` wheel when installed).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from typing_extensions import Self

from ._framebus import (
    Capture,
    CudaError,
    CudaFrame,
    CudaOutOfMemory,
    CudaUnavailable,
    DevicePool,
    _cuda_compile_kernels,
    _cuda_device_count,
    _cuda_device_info,
    _cuda_is_available,
    _cuda_kernel_source,
    _cuda_nvrtc_version,
    _cuda_unavailable_reason,
)

__all__ = [
    "CudaError",
    "CudaFrame",
    "CudaOutOfMemory",
    "CudaUnavailable",
    "DeviceFrames",
    "DevicePool",
    "capture",
    "compile_kernels",
    "device_count",
    "device_info",
    "is_available",
    "kernel_source",
    "nvrtc_version",
    "unavailable_reason",
]


def _find_wheel_nvrtc() -> None:
    """Point FRAMEBUS_CUDA_NVRTC at the nvidia-cuda-nvrtc wheel's library when
    it is installed and nothing else was chosen (no import of the wheel)."""
    if os.environ.get("FRAMEBUS_CUDA_NVRTC"):
        return
    try:
        spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    except (ImportError, ValueError):
        return
    for root in (spec.submodule_search_locations or []) if spec else []:
        libs = sorted(Path(root, "lib").glob("libnvrtc.so.*[0-9]"))
        libs = [p for p in libs if ".alt." not in p.name and "builtins" not in p.name]
        if libs:
            os.environ["FRAMEBUS_CUDA_NVRTC"] = str(libs[-1])
            return


_find_wheel_nvrtc()


def is_available() -> bool:
    """True when a CUDA driver loads, initialises and sees a device."""
    return _cuda_is_available()


def unavailable_reason() -> str | None:
    """What is missing for CUDA (None when it is available)."""
    return _cuda_unavailable_reason()


def device_count() -> int:
    """Devices the driver sees; raises CudaUnavailable when there are none."""
    return _cuda_device_count()


def device_info(device: str | int | Any = "cuda:0") -> dict[str, Any]:
    """Name, compute capability, memory and driver of a device."""
    return _cuda_device_info(device)


def compile_kernels(arch: str) -> str:
    """framebus's GPU kernels compiled by NVRTC for ``arch`` ("sm_75" ...): PTX.
    Needs NVRTC only, no GPU."""
    return _cuda_compile_kernels(arch)


def nvrtc_version() -> tuple[str, tuple[int, int]]:
    """The NVRTC library framebus uses and its version."""
    return _cuda_nvrtc_version()


def kernel_source() -> tuple[list[str], str]:
    """The kernels' names and their CUDA C source."""
    return _cuda_kernel_source()


class DeviceFrames:
    """A frame source whose frames arrive on the GPU: ``latest()``, ``recv()``,
    ``frames()`` and iteration return ``CudaFrame``s.

    ``source`` is anything with ``latest()``/``recv()``/``frames()`` returning
    framebus ``Frame``s (``framebus.Capture``, ``framebus.Subscriber``,
    ``framebus.zenoh.Subscriber``). Each frame is handed to
    ``Frame.to_device(device, stream=, format=, size=, method=, mean=, std=,
    matrix=, range=, pool=)`` as it is taken: the copy (and conversion) is queued on a
    framebus stream and the call returns at once, so the source's next grab or
    receive overlaps the GPU's copy. The host slot goes back to its pool only
    once the copy's event has completed (framebus's reaper holds its lease),
    never earlier. Uploads from pinned slots (``FramePool(pinned=device)``,
    which ``capture()`` uses) are asynchronous DMA; slots a channel maps from
    another process are pageable and upload at pageable speed.

    ``framebus.Capture`` and ``framebus.Subscriber`` take ``device=`` (and
    the upload options) themselves, pinning the slots they fill or map; this
    adapter serves any other source. Closing (``close()``, ``with``) closes the
    source when it has ``close`` or ``stop``.
    """

    def __init__(
        self,
        source: Any,
        device: str | int | Any = "cuda:0",
        *,
        format: str | None = None,
        size: tuple[int, int] | None = None,
        method: str | None = None,
        mean: float | tuple[float, float, float] | None = None,
        std: float | tuple[float, float, float] | None = None,
        matrix: str | None = None,
        range: str | None = None,
        stream: int | Any | None = None,
        pool: DevicePool | None = None,
    ) -> None:
        if not any(hasattr(source, m) for m in ("latest", "recv", "frames")):
            msg = f"source={source!r} has no latest(), recv() or frames()"
            raise TypeError(msg)
        self.source = source
        self.device = device
        self._kw: dict[str, Any] = {
            "stream": stream,
            "format": format,
            "mean": mean,
            "std": std,
            "pool": pool,
            "size": size,
            "method": method,
            "matrix": matrix,
            "range": range,
        }

    def upload(self, frame: Any) -> CudaFrame:
        """``frame.to_device(...)`` with this object's options."""
        return frame.to_device(self.device, **self._kw)

    def latest(self, *args: Any, **kwargs: Any) -> CudaFrame:
        """The source's ``latest(...)``, uploaded."""
        return self.upload(self.source.latest(*args, **kwargs))

    def recv(self, *args: Any, **kwargs: Any) -> CudaFrame:
        """The source's ``recv(...)``, uploaded."""
        return self.upload(self.source.recv(*args, **kwargs))

    def frames(self, *args: Any, **kwargs: Any) -> Iterator[CudaFrame]:
        """The source's ``frames(...)`` (or its iteration), each uploaded."""
        it = self.source.frames(*args, **kwargs) if hasattr(self.source, "frames") else self.source
        for frame in it:
            yield self.upload(frame)

    def __iter__(self) -> Iterator[CudaFrame]:
        return self.frames()

    def close(self) -> None:
        """Close (or stop) the source."""
        for name in ("close", "stop"):
            fn = getattr(self.source, name, None)
            if fn is not None:
                fn()
                return

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DeviceFrames({self.source!r}, device={self.device!r}, {self._kw!r})"


def capture(
    *args: Any,
    device: str | int | Any = "cuda:0",
    **kwargs: Any,
) -> Capture:
    """``framebus.Capture(*args, device=device, **kwargs)``: grabs into pinned
    slots, frames uploaded (and converted: ``format``, ``size``, ``method``,
    ``mean``, ``std``, ``matrix``, ``range``, ``stream``, ``device_pool``) as
    they are taken; ``latest()``/``next()``/``frames()`` return ``CudaFrame``s."""
    return Capture(*args, device=device, **kwargs)
