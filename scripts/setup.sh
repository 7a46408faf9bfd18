#!/usr/bin/env bash
# Create .venv and install raycluster with its dev extra; does nothing when pyproject.toml
# has not changed since the last install. Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.raycluster-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  # The jobs CLI needs ray[default]'s packages; fail here, not at the first `ray job submit`.
  .venv/bin/python -c "import aiohttp, grpc, opencensus, ray, torch, timm, faiss" \
    || { echo "setup: installed stack is incomplete (see above)" >&2; exit 1; }
  touch "$stamp"
fi
