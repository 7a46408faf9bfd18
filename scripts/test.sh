#!/usr/bin/env bash
# One command from a fresh clone: install, then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"   # tests call `ray start` / `ray job submit`
exec .venv/bin/python -m pytest "$@"
