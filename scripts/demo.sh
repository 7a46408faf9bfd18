#!/usr/bin/env bash
# One command from a fresh clone: install, then run the main job on the embedded default
# (local Ray, scikit-learn digits -> WebDataset shards -> features -> clusters). Extra
# arguments are Hydra overrides, e.g. `bash scripts/demo.sh method=kmeans`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python jobs/train.py "$@"
