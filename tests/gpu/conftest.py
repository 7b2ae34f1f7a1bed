"""Real-GPU tests (docs/gpu.md): skipped unless a real CUDA driver and device
are present. Run by scripts/gpu-check.sh on a machine with an NVIDIA GPU;
torch and CuPy are the consumers (each test skips when its consumer is missing).
"""

from __future__ import annotations

import os

import framebus.cuda as fcuda
import pytest


def pytest_collection_modifyitems(config, items):
    driver = os.environ.get("FRAMEBUS_CUDA_DRIVER", "")
    reason = None
    if "fake" in driver:
        reason = "the fake CUDA driver is selected (these tests need a real GPU)"
    elif not fcuda.is_available():
        reason = f"no GPU: {fcuda.unavailable_reason()}"
    if reason:
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if "tests/gpu/" in str(item.fspath).replace(os.sep, "/"):
                item.add_marker(skip)
