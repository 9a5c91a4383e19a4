#!/usr/bin/env bash
# Creates .venv with python3 and installs into it what the calling script needs, once per
# change of pyproject.toml. Sourced by the other scripts:
#   source bootstrap.sh demo   the project with DuckDB: what `faucet demo` needs;
#   source bootstrap.sh        every extra (PyTorch and the training frameworks too), the test
#                              and docs tools, added to the same virtualenv (the demo's stays).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${FAUCET_VENV:-.venv}"
profile="${1:-all}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# A profile is installed when its stamp, or the full profile's, is newer than pyproject.toml.
installed() { [ -f "$VENV/.faucet-installed-$1" ] && [ ! pyproject.toml -nt "$VENV/.faucet-installed-$1" ]; }
if ! installed "$profile" && ! installed all; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  if [ "$profile" = demo ]; then
    "$VENV/bin/python" -m pip install --quiet -e ".[duckdb]"
  else
    # PyTorch is pinned to the release the tests run against; installed first, it is the
    # one the `torch` extra keeps.
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
    "$VENV/bin/python" -m pip install --quiet -e ".[all,dev,docs,lightning,keras,transformers]"
  fi
  touch "$VENV/.faucet-installed-$profile"
fi
export PATH="$PWD/$VENV/bin:$PATH"
