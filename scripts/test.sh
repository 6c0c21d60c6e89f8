#!/usr/bin/env bash
# Sets up .venv with the test, torch and flax extras and runs the lint, the test suite
# and the notebooks (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh tests torch flax
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
exec .venv/bin/python -m pytest -n auto --nbmake tests notebooks "$@"
