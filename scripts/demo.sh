#!/usr/bin/env bash
# Sets up .venv (with Flax and PyTorch) and runs the demo: every op checked against the
# float64 reference, a Flax training run, the PyTorch bridge, the speed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh flax torch
exec .venv/bin/python -m swiglu_jax.demo "$@"
