"""Every framebus GPU kernel compiles with the real NVRTC for each architecture
framebus supports (sm_75 .. sm_90): NVRTC needs no GPU, so a kernel that does
not build fails here, not on a user's machine. NVRTC comes from the
``nvidia-cuda-nvrtc-cu12`` wheel (requirements-test.txt); the test is
skipped when it is not installed. Runs in a fresh interpreter so that the
library chosen is the wheel's, whatever other tests selected.

When the ``nvidia-cuda-nvcc-cu12`` wheel is installed too, ``ptxas`` assembles
each architecture's PTX into SASS (what the driver's JIT does on a user's
machine), so register or resource limits a kernel exceeds fail here as well.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ARCHS = ["sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90"]

if (
    importlib.util.find_spec("nvidia") is None
    or importlib.util.find_spec("nvidia.cuda_nvrtc") is None
):
    pytest.skip("nvidia-cuda-nvrtc-cu12 is not installed", allow_module_level=True)

PROBE = r"""
import json, sys
import framebus.cuda as fc
names, _ = fc.kernel_source()
out = {"nvrtc": fc.nvrtc_version(), "names": names, "ptx": {}}
for arch in sys.argv[1:]:
    out["ptx"][arch] = fc.compile_kernels(arch)
print(json.dumps(out))
"""


def test_every_kernel_compiles_for_every_supported_arch():
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEBUS_CUDA")}
    r = subprocess.run(
        [sys.executable, "-c", PROBE, *ARCHS], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    path, (major, _minor) = out["nvrtc"]
    assert "nvrtc" in path and major >= 12
    assert out["names"][4:] == ["framebus_resample", "framebus_resample_nv12"]
    for arch in ARCHS:
        ptx = out["ptx"][arch]
        assert f".target {arch}" in ptx, arch
        for name in out["names"]:
            assert f".entry {name}(" in ptx, (arch, name)
        # --fmad=false: no fused multiply-add in the float kernel.
        assert "fma.rn.f32" not in ptx, arch


def _ptxas() -> Path | None:
    spec = importlib.util.find_spec("nvidia.cuda_nvcc")
    for root in (spec.submodule_search_locations or []) if spec else []:
        p = Path(root, "bin", "ptxas")
        if p.exists():
            return p
    return None


def test_ptxas_assembles_every_kernel_for_every_supported_arch(tmp_path):
    ptxas = _ptxas()
    if ptxas is None:
        pytest.skip("nvidia-cuda-nvcc-cu12 (ptxas) is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEBUS_CUDA")}
    r = subprocess.run(
        [sys.executable, "-c", PROBE, *ARCHS], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    for arch in ARCHS:
        src = tmp_path / f"{arch}.ptx"
        src.write_text(out["ptx"][arch])
        cubin = tmp_path / f"{arch}.cubin"
        a = subprocess.run(
            [str(ptxas), f"-arch={arch}", "-v", "-o", str(cubin), str(src)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert a.returncode == 0, (arch, a.stderr[-3000:])
        assert cubin.stat().st_size > 0
        for name in out["names"]:
            assert f"Compiling entry function '{name}'" in a.stderr, (arch, name)
        # No kernel spills registers to local memory or needs a stack.
        props = [ln.strip() for ln in a.stderr.splitlines() if "spill stores" in ln]
        assert len(props) == len(out["names"]), (arch, a.stderr)
        assert set(props) == {"0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"}
        # Every kernel launches 32 x 8 = 256 threads a block: their registers fit
        # the 64 K a block may use (else the launch fails on the GPU).
        regs = [int(m) for m in re.findall(r"Used (\d+) registers", a.stderr)]
        assert len(regs) == len(out["names"]) and max(regs) * 256 <= 65536, (arch, regs)


def test_a_broken_arch_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEBUS_CUDA")}
    code = (
        "import framebus, framebus.cuda as fc\n"
        "try:\n    fc.compile_kernels('sm_10')\n"
        "except framebus.CudaError as e:\n    print(type(e).__name__, e)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert "CudaError NVRTC could not compile framebus's kernels for sm_10" in r.stdout, (
        r.stdout + r.stderr
    )
