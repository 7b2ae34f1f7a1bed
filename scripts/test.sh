#!/usr/bin/env bash
# Set up and run every test: Rust unit tests, the lifetime-critical core tests
# under valgrind, and the Python end-to-end suite on the oldest and newest
# supported Pythons (override with FRAMEBUS_PYTHONS).
set -euo pipefail
cd "$(dirname "$0")/.."
export FRAMEBUS_PYTHONS="${FRAMEBUS_PYTHONS:-3.9 3.13}"
bash scripts/setup.sh

echo "== cargo test (workspace)"
cargo test --workspace -q

if command -v valgrind >/dev/null; then
    echo "== core lease/pool tests under valgrind memcheck"
    bin=$(cargo test -p framebus-core --lib --no-run --message-format=json 2>/dev/null \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-possibly-lost=no \
        "$bin" -q --test-threads=2 lease:: pool:: frame::
fi

for v in $FRAMEBUS_PYTHONS; do
    venv=.venv; [ "$v" = 3.11 ] || venv=".venv-$v"
    echo "== pytest on $("$venv/bin/python" -V)"
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests
done
