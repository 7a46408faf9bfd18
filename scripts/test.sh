#!/usr/bin/env bash
# One command from a fresh clone: install, then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The report test opens the HTML report in a real browser: Debian's Chromium (no download
# from the browser vendor). Installed here when missing and apt is available.
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ] && command -v apt-get >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "test: installing Debian's chromium for the report test"
  $sudo apt-get install -y -q chromium >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; }
fi
export PATH="$PWD/.venv/bin:$PATH"   # tests call `ray start` / `ray job submit`
exec .venv/bin/python -m pytest "$@"
