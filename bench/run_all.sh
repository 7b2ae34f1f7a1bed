#!/usr/bin/env bash
# Every benchmark, one after another (never two at once on a 2-core machine).
# Install the anchors first: FRAMEBUS_BENCH=1 bash scripts/setup.sh
# Tables go to stdout and to bench/out/*.md; docs/benchmarks.md collects them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OPENBLAS_NUM_THREADS=1  # idle OpenBLAS threads spin on the 2 cores otherwise
for b in pool capture pipe channel kernels; do
    echo "== bench_$b"
    "$PY" "bench/bench_$b.py"
done
