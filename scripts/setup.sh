#!/usr/bin/env bash
# Creates .venv with Python >= 3.12 and installs swiglu-jax with the extras given as
# arguments (for example: bash scripts/setup.sh tests). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }

find_python() {
  local candidates=("${SWIGLU_PYTHON:-}" python3.12 python3.13 python3)
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)"/versions/3.12*/bin/python3 "$(pyenv root)"/versions/3.1[3-9]*/bin/python3)
  fi
  local candidate
  for candidate in "${candidates[@]}"; do
    if [ -n "$candidate" ] && python_ok "$candidate"; then
      echo "$candidate"
      return
    fi
  done
  echo "swiglu-jax needs Python >= 3.12 (jax >= 0.11 does): none found." >&2
  echo "Install one, or point SWIGLU_PYTHON at it." >&2
  return 1
}

if [ ! -x .venv/bin/python ] || ! python_ok .venv/bin/python; then
  rm -rf .venv
  python="$(find_python)"
  echo "Creating .venv with $("$python" --version) ($python)"
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi

extras="$(IFS=,; echo "$*")"
target="."
[ -n "$extras" ] && target=".[$extras]"
echo "Installing swiglu-jax${extras:+ with extras [$extras]} into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target"
