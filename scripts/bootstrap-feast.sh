#!/usr/bin/env bash
# Creates .venv-feast, the virtualenv of the Feast tests, once per change of pyproject.toml:
# Feast needs pandas < 3, so it cannot share .venv (pandas 3). Sourced by scripts/test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FEAST_VENV="${FAUCET_FEAST_VENV:-.venv-feast}"
if [ ! -x "$FEAST_VENV/bin/python" ]; then
  python3 -m venv "$FEAST_VENV"
fi
feast_stamp="$FEAST_VENV/.faucet-installed"
if [ ! -f "$feast_stamp" ] || [ pyproject.toml -nt "$feast_stamp" ]; then
  "$FEAST_VENV/bin/python" -m pip install --quiet --upgrade pip
  # These extras pull no torch (bootstrap.sh pins the torch of .venv).
  "$FEAST_VENV/bin/python" -m pip install --quiet -e ".[duckdb,feast,postgres,dev]"
  touch "$feast_stamp"
fi
