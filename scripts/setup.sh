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
  # pip's output (and the index's warnings, one per package) goes to a log, shown only on failure.
  log=.venv/pip-install.log
  echo "setup: installing into .venv (a few minutes the first time; log: $log)"
  if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e '.[dev]'; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "setup: pip install failed (full log: $log)" >&2
    exit 1
  fi
  # The jobs CLI needs ray[default]'s packages; fail here, not at the first `ray job submit`.
  .venv/bin/python -c "import aiohttp, grpc, opencensus, ray, torch, timm, faiss" \
    || { echo "setup: installed stack is incomplete (see above)" >&2; exit 1; }
  touch "$stamp"
fi
