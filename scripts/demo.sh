#!/usr/bin/env bash
# Sets up .venv and runs the demo: every op checked against the float64 reference.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m swiglu_jax.demo "$@"
