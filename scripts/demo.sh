#!/usr/bin/env bash
# Set up (apt packages, .venv with Python 3.11, release build) and run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMEBUS_PYTHONS=3.11 bash scripts/setup.sh
exec .venv/bin/python examples/demo.py "$@"
