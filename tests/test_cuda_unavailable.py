"""framebus.cuda without a usable CUDA driver: every entry point raises
framebus.CudaUnavailable saying what is missing (no driver library, a library
without the driver's entry points, no device, a driver too old, no NVRTC),
nothing panics, and importing framebus loads no CUDA library.

Each case runs in a fresh interpreter: the driver is chosen once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cuda_fake
import pytest

PROBE = r"""
import json, sys
import framebus
before = open("/proc/self/maps").read()
import framebus.cuda as fc
after_import = open("/proc/self/maps").read()
out = {"cuda_loaded_at_import": any(
    s in m for m in (before, after_import) for s in ("libcuda", "fake_cuda", "libnvrtc"))}
out["available"] = fc.is_available()
out["reason"] = fc.unavailable_reason()
out["subclass"] = issubclass(framebus.CudaUnavailable, framebus.FramebusError)
frame = framebus.FramePool().acquire(8, 8)
calls = {
    "device_count": lambda: fc.device_count(),
    "device_info": lambda: fc.device_info(0),
    "DevicePool": lambda: fc.DevicePool("cuda:0"),
    "FramePool_pinned": lambda: framebus.FramePool(pinned="cuda:0"),
    "to_device": lambda: frame.to_device("cuda:0"),
    "to_device_rgb": lambda: frame.to_device(format="RGB"),
}
for name, call in calls.items():
    try:
        call()
        out[name] = "no error"
    except BaseException as e:
        out[name] = [type(e).__name__, str(e)]
try:
    fc.compile_kernels("sm_80")
    out["compile"] = "no error"
except BaseException as e:
    out["compile"] = [type(e).__name__, str(e)]
print(json.dumps(out))
"""


def probe(env: dict[str, str]) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "panic" not in r.stderr.lower(), r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def clean_env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("FRAMEBUS_CUDA", "FAKE_CUDA"))}
    e.update(extra)
    return e


def check_every_entry_point(out: dict, needle: str) -> None:
    assert out["available"] is False
    assert needle in out["reason"], out["reason"]
    assert out["subclass"]
    assert not out["cuda_loaded_at_import"]
    for name in ("device_count", "device_info", "DevicePool", "FramePool_pinned", "to_device"):
        kind, msg = out[name]
        assert kind == "CudaUnavailable", (name, out[name])
        assert msg.startswith("CUDA unavailable: ") and needle in msg, (name, msg)


def test_no_driver_library():
    out = probe(clean_env(FRAMEBUS_CUDA_DRIVER="/nonexistent/libcuda.so.1"))
    check_every_entry_point(out, "no CUDA driver library: /nonexistent/libcuda.so.1")
    assert "FRAMEBUS_CUDA_DRIVER" in out["reason"]


def test_default_library_name_when_not_overridden():
    if any(
        os.path.exists(p)
        for p in ("/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1")
    ):
        pytest.skip("this machine has a CUDA driver")
    out = probe(clean_env())
    check_every_entry_point(out, "libcuda.so.1")


def test_library_without_the_driver_entry_points():
    out = probe(clean_env(FRAMEBUS_CUDA_DRIVER="libc.so.6"))
    check_every_entry_point(out, "lacks cuInit (driver too old?)")


@pytest.fixture(scope="module")
def fake():
    path = cuda_fake.build()
    if path is None:
        pytest.skip("no C compiler for the fake CUDA driver")
    return path


def test_no_device(fake):
    env = clean_env(FRAMEBUS_CUDA_DRIVER=str(fake), FAKE_CUDA_DEVICES="0")
    check_every_entry_point(probe(env), "no CUDA device (the driver sees 0 devices)")


def test_driver_too_old(fake):
    env = clean_env(FRAMEBUS_CUDA_DRIVER=str(fake), FAKE_CUDA_VERSION="10020")
    check_every_entry_point(
        probe(env), "the CUDA driver is too old: version 10.2 (framebus needs 11.0 or newer)"
    )


def test_no_nvrtc(fake):
    env = clean_env(FRAMEBUS_CUDA_DRIVER=str(fake), FRAMEBUS_CUDA_NVRTC="/nonexistent/libnvrtc.so")
    out = probe(env)
    assert out["available"] is True
    assert out["to_device"] == "no error"  # a plain copy needs no kernel
    for name in ("to_device_rgb", "compile"):
        kind, msg = out[name]
        assert kind == "CudaUnavailable", out[name]
        assert "no NVRTC library" in msg and "nvidia-cuda-nvrtc-cu12" in msg, msg
