"""The fake CUDA driver for the tests (crates/framebus-cuda/fake/fake_cuda.c).

``build()`` compiles it with the system C compiler into
``target/fake_cuda/libfake_cuda-<hash>.so`` (again only when the source is newer) and
returns the path, or None when no compiler is found. ``Fake(path)`` loads it
with ctypes: the same library (one copy of its state) that framebus loads when
``FRAMEBUS_CUDA_DRIVER`` names it, so the tests can turn its knobs (failing
allocations, slow streams, failing copies), read its counters (registered
bytes, launches, context synchronisations) and play a consumer (a stream of
its own, a long-running "kernel", a copy that reads a device buffer).

The fake tests framebus's logic, not CUDA: device memory is host memory.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "crates" / "framebus-cuda" / "fake" / "fake_cuda.c"


def build() -> Path | None:
    """The fake's path (named by its source's hash, so an edit rebuilds it)."""
    digest = hashlib.sha1(SOURCE.read_bytes()).hexdigest()[:12]
    OUT = ROOT / "target" / "fake_cuda" / f"libfake_cuda-{digest}.so"
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if OUT.exists():
        return OUT
    if cc is None:
        return None
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run(
        [cc, "-O2", "-Wall", "-shared", "-fPIC", "-pthread", "-o", str(tmp), str(SOURCE)],
        check=True,
    )
    tmp.replace(OUT)
    return OUT


def env(path: Path, **knobs: int) -> dict[str, str]:
    """An environment that selects the fake (driver and NVRTC) with knobs."""
    e = dict(os.environ)
    e["FRAMEBUS_CUDA_DRIVER"] = str(path)
    e["FRAMEBUS_CUDA_NVRTC"] = str(path)
    for k, v in knobs.items():
        e[f"FAKE_CUDA_{k.upper()}"] = str(v)
    return e


class Fake:
    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        lib.fake_cuda_get.argtypes = [ctypes.c_char_p]
        lib.fake_cuda_get.restype = ctypes.c_long
        lib.fake_cuda_set.argtypes = [ctypes.c_char_p, ctypes.c_long]
        lib.fake_cuda_set_stream_slow.argtypes = [ctypes.c_void_p, ctypes.c_long]
        lib.fake_cuda_stream_sleep.argtypes = [ctypes.c_void_p, ctypes.c_long]
        lib.cuStreamCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint]
        lib.cuStreamSynchronize.argtypes = [ctypes.c_void_p]
        lib.cuMemcpyDtoHAsync_v2.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint64,
            ctypes.c_size_t,
            ctypes.c_void_p,
        ]
        self.lib = lib

    def get(self, what: str) -> int:
        v = self.lib.fake_cuda_get(what.encode())
        assert v >= 0, what
        return v

    def set(self, what: str, value: int) -> None:
        assert self.lib.fake_cuda_set(what.encode(), value) == 1, what

    def stream(self) -> int:
        s = ctypes.c_void_p()
        assert self.lib.cuStreamCreate(ctypes.byref(s), 1) == 0
        return s.value

    def sleep_on(self, stream: int, ms: int) -> None:
        assert self.lib.fake_cuda_stream_sleep(stream, ms) == 0

    def slow_stream(self, stream: int, ms: int) -> None:
        assert self.lib.fake_cuda_set_stream_slow(stream, ms) == 0

    def read_on(self, stream: int, ptr: int, n: int) -> ctypes.Array:
        """Queue a device-to-host copy of ``n`` bytes at ``ptr`` on ``stream``
        (a consumer kernel reading the buffer); the bytes land in the result
        once the stream got there."""
        buf = (ctypes.c_char * n)()
        assert self.lib.cuMemcpyDtoHAsync_v2(buf, ptr, n, stream) == 0
        return buf

    def synchronize(self, stream: int) -> None:
        assert self.lib.cuStreamSynchronize(stream) == 0
