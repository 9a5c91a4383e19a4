#!/usr/bin/env bash
# Creates .venv with python3 and installs the project with its extras, once per change of
# pyproject.toml. Sourced by the other scripts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${FAUCET_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.faucet-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # The CPU build of torch lies on these machines; an unpinned torch would pull CUDA.
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
  "$VENV/bin/python" -m pip install --quiet -e ".[all,dev,docs]"
  touch "$stamp"
fi
export PATH="$PWD/$VENV/bin:$PATH"
