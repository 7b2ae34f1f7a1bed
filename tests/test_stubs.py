"""The .pyi stubs match the compiled module (mypy's stubtest), so IDEs and type
checkers see the real signatures."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")


def test_stubs_match_the_runtime(tmp_path):
    allow = Path(__file__).with_name("stubtest-allowlist.txt")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "framebus._framebus",
            "--allowlist",
            str(allow),
            "--ignore-unused-allowlist",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
