#!/usr/bin/env bash
# The GPU check of issue #16, for a machine with an NVIDIA GPU, Python 3.12 with
# torch and CuPy, and no Rust toolchain. It installs a framebus wheel built on
# another machine, runs tests/gpu (torch/CuPy consumers) and bench/bench_gpu.py,
# and writes everything into the folder the caller names — in under 8 minutes.
#
#   bash scripts/gpu-check.sh RESULTS_DIR [WHEEL]
#
# WHEEL defaults to dist/framebus-*-cp312-*.whl, built on a development machine
# (Rust, pyenv's 3.12) with:
#
#   bash scripts/build-wheels.sh 3.12
#   # → dist/framebus-0.1.0-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
#
# Copy the repository (for tests/ and bench/) and that wheel to the GPU machine.
# PYTHON (default python3.12) is the interpreter that has torch and CuPy; the
# script makes a venv on top of it (--system-site-packages) so nothing of the
# machine's own Python changes. Results: env.txt (nvidia-smi, versions),
# pytest.txt + junit.xml (tests/gpu), bench.txt + gpu.jsonl (the benchmark),
# status.txt (one line per step, with its exit code).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash scripts/gpu-check.sh RESULTS_DIR [WHEEL]}
wheel=${2:-$(ls dist/framebus-*-cp312-*.whl 2>/dev/null | tail -1)}
py=${PYTHON:-python3.12}
mkdir -p "$out"
out=$(cd "$out" && pwd)
status() { echo "$1: $2" | tee -a "$out/status.txt"; }
: >"$out/status.txt"
start=$SECONDS

[ -n "$wheel" ] && [ -f "$wheel" ] || { status wheel "missing (build it: bash scripts/build-wheels.sh 3.12)"; exit 2; }
venv="$out/venv"
"$py" -m venv --system-site-packages "$venv" || { status venv "failed ($py)"; exit 2; }
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$wheel"
status install "$? ($wheel)"
# numpy and pytest from the machine, else from the index.
"$venv/bin/python" -c "import numpy, pytest" 2>/dev/null ||
    "$venv/bin/python" -m pip install -q --disable-pip-version-check numpy pytest
{
    date -u
    nvidia-smi 2>&1 || echo "nvidia-smi: not found"
    "$venv/bin/python" - <<'PY'
import importlib, json
import framebus, framebus.cuda as fc
print("framebus", framebus.__version__, framebus.__file__)
print("cuda available:", fc.is_available(), fc.unavailable_reason())
if fc.is_available():
    print(json.dumps(fc.device_info(0)))
for m in ("torch", "cupy", "numpy"):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as e:
        print(m, "missing:", e)
PY
} >"$out/env.txt" 2>&1
status env "$?"

# Xvfb when it can (framebus imports capture lazily; tests/gpu need no display,
# but the conftest of tests/ starts servers only on demand).
if command -v Xvfb >/dev/null && [ -z "${DISPLAY:-}" ]; then
    Xvfb :97 -screen 0 1920x1080x24 -noreset >/dev/null 2>&1 &
    xvfb=$!
    export DISPLAY=:97
    trap 'kill $xvfb 2>/dev/null' EXIT
fi

# Run from a scratch directory so only the installed wheel provides `import framebus`.
scratch=$(mktemp -d)
cp -r tests "$scratch/tests"
cp -r bench "$scratch/bench"
(cd "$scratch" && timeout 300 "$venv/bin/python" -m pytest -v -p no:cacheprovider \
    --junitxml="$out/junit.xml" tests/gpu) >"$out/pytest.txt" 2>&1
status "tests/gpu" "$? (pytest exit code; $((SECONDS - start)) s so far)"
left=$((470 - (SECONDS - start)))
quick=""
[ "$left" -lt 150 ] && quick="--quick"
(cd "$scratch" && timeout "$((left > 30 ? left : 30))" "$venv/bin/python" bench/bench_gpu.py \
    --out "$out/gpu.jsonl" $quick) >"$out/bench.txt" 2>&1
status bench "$? ($((SECONDS - start)) s in all)"
rm -rf "$scratch"
