"""What every bench script shares (they run as `python bench/<name>.py`, so this imports as `common`)."""
from __future__ import annotations

import json
import os
from pathlib import Path

# Real data for benchmarks: ../shared/data next to the repo, or $RAYCLUSTER_SHARED_DATA.
SHARED = Path(os.environ.get("RAYCLUSTER_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def append_json_rows(path: str | None, rows: list[dict]) -> None:
    """Append one JSON line per row to `path` (nothing when path is None)."""
    if not path:
        return
    with open(path, "a") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def parse_with_work_dir(parser, default_work: Path):
    """Add --work and --json, parse; returns (args, the work folder (created), "<cores> cores")."""
    parser.add_argument("--work", default=str(default_work))
    parser.add_argument("--json", default=None, help="append result rows as JSON lines")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    return args, work, f"{os.cpu_count()} cores"
