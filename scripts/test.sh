#!/usr/bin/env bash
# Sets up .venv with the test and torch extras and runs the lint and the test suite (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh tests torch
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
exec .venv/bin/python -m pytest -n auto "$@"
