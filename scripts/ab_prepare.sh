#!/usr/bin/env bash
# Copies of swiglu_jax and torch_bridge at several revisions, for a side-by-side run of
# the benchmark on the GPU machine (gpu_session.sh's `ab` stage):
#
#   bash scripts/ab_prepare.sh REV [REV ...]     (a revision "work" is the working tree)
#
# Each lands in ab/NAME (ab/ is ignored by git: name it in the device tool's carry). The
# `ab` stage runs the benchmark from inside each copy, so Python imports that copy:
# `python -m` puts the current directory first on the path, ahead of PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: $0 REV [REV ...]" >&2; exit 2; }
rm -rf ab
for rev in "$@"; do
  name="${rev//\//_}"
  mkdir -p "ab/$name"
  if [ "$rev" = work ]; then
    cp -r swiglu_jax torch_bridge "ab/$name/"
    find "ab/$name" -name __pycache__ -prune -exec rm -rf {} +
    echo "ab/$name: the working tree (on $(git rev-parse --short HEAD))"
  else
    git archive "$rev" swiglu_jax torch_bridge | tar -x -C "ab/$name"
    echo "ab/$name: $(git rev-parse --short "$rev")"
  fi
done
