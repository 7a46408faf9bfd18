"""What every bench script shares (they run as `python bench/<name>.py`, so this imports as `common`)."""
from __future__ import annotations

import datetime
import json
import os
import shlex
import sys
from pathlib import Path

# Real data for benchmarks: ../shared/data next to the repo, or $RAYCLUSTER_SHARED_DATA.
SHARED = Path(os.environ.get("RAYCLUSTER_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def machine() -> str:
    """What the figures were measured on, e.g. "2 cores (CPU)" or "16 cores, NVIDIA H200"."""
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        gpu = None
    return f"{os.cpu_count()} cores, {gpu}" if gpu else f"{os.cpu_count()} cores (CPU)"


def command() -> str:
    """The command line that is running, without the options that only say where files go."""
    script = Path(sys.argv[0]).resolve()
    bench_dir = Path(__file__).resolve().parent
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg in ("--json", "--work"):
            skip = True
        elif not arg.startswith(("--json=", "--work=")):
            args.append(arg)
    return " ".join(["python", f"bench/{script.relative_to(bench_dir)}", *map(shlex.quote, args)])


def append_json_rows(path: str | None, rows: list[dict]) -> None:
    """Append one JSON line per row to `path` (nothing when path is None); each row records the
    command, the machine and the date, which `scripts/bench_readme.py` prints beside its figures."""
    if not path:
        return
    stamp = {"command": command(), "machine": machine(), "date": datetime.date.today().isoformat()}
    with open(path, "a") as handle:
        for row in rows:
            handle.write(json.dumps({**stamp, **{k: v for k, v in row.items() if k != "machine"}}) + "\n")


def parse_with_work_dir(parser, default_work: Path):
    """Add --work and --json, parse; returns (args, the work folder (created), machine())."""
    parser.add_argument("--work", default=str(default_work))
    parser.add_argument("--json", default=None, help="append result rows as JSON lines")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    return args, work, machine()
