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
  and ``__cuda_array_interface__``, and copies back with ``to_host()``.

Environment: ``FRAMEBUS_CUDA_DRIVER`` (the driver library, default
``libcuda.so.1``), ``FRAMEBUS_CUDA_NVRTC`` (NVRTC, default ``libnvrtc.so.12``
or the one of the ``nvidia-cuda-nvrtc-cu12`` wheel when installed).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from ._framebus import (
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
    "DevicePool",
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
