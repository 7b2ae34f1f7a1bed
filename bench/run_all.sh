#!/usr/bin/env bash
# Every benchmark, one after another (never two at once on a 2-core machine).
# Install the anchors first: FRAMEBUS_BENCH=1 bash scripts/setup.sh
# Tables go to stdout and to bench/out/*.md; docs/benchmarks.md collects them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OPENBLAS_NUM_THREADS=1  # idle OpenBLAS threads spin on the 2 cores otherwise
mkdir -p bench/out
benches=(pool capture pipe channel kernels)
start=$SECONDS
for i in "${!benches[@]}"; do
    b=${benches[$i]}
    # progress: which benchmark of how many, and the time spent so far
    echo "== [$((i + 1))/${#benches[@]}] bench_$b ($((SECONDS - start)) s elapsed)"
    args=()
    [ "$b" = kernels ] && args=(--markdown bench/out/kernels.md)
    "$PY" "bench/bench_$b.py" "${args[@]}"
done
# The README's chart from this run, on top of the recorded figures; bench/out/results.jsonl
# is the merged set, to copy over bench/results/current.jsonl with the tables (docs/benchmarks.md).
echo "== plot"
"$PY" bench/plot.py bench/results/current.jsonl bench/out/*.json bench/out/kernels.md \
    -o docs/img/benchmarks.png --save bench/out/results.jsonl
