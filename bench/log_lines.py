"""How many lines a job writes to its log (stdout + stderr, not a terminal), and from where.

    python bench/log_lines.py                                  # experiment=diec_mnist (~25 min on 2 cores)
    python bench/log_lines.py --overrides method=kmeans --json rows.jsonl

Runs `jobs/train.py` with the overrides in a subprocess whose output is a file (as under
`ray job submit` or `nohup`), then counts the lines by source: raycluster's own (stage lines,
per-epoch metrics, the summary), Ray processes' (`(Name pid=N)` prefixes) and the rest.
Rows: {"overrides", "lines", "by_source", "seconds", "acc", "exit"}.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_json_rows, parse_with_work_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def source_of(line: str) -> str:
    """'raycluster', a Ray process name ('RayTrainWorker', '_trial', ...), or 'other'."""
    ray_process = re.match(r"(?:\x1b\[\d+m)?\(([\w.-]+) pid=\d+", line)
    if ray_process:
        return ray_process.group(1)
    return "raycluster" if re.match(r"\[\d\d:\d\d:\d\d raycluster", line) or line.startswith("  ") else "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overrides", nargs="*", default=["experiment=diec_mnist"])
    args, work, machine = parse_with_work_dir(parser, REPO / "outputs" / "bench-log-lines")
    log_path = work / "job.log"
    start = time.time()
    with open(log_path, "w") as log:
        code = subprocess.call([sys.executable, str(REPO / "jobs" / "train.py"), *args.overrides,
                                f"output_dir={work / 'run'}"], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    lines = log_path.read_text(errors="replace").splitlines()
    summary_path = work / "run" / "summary.json"
    acc = json.loads(summary_path.read_text()).get("metrics", {}).get("acc") if summary_path.exists() else None
    row = {"overrides": " ".join(args.overrides), "lines": len(lines),
           "by_source": dict(collections.Counter(source_of(line) for line in lines).most_common()),
           "seconds": round(time.time() - start, 1), "acc": acc, "exit": code}
    print(f"{row['overrides']}: {row['lines']} lines in {row['seconds']} s (exit {code}); by source {row['by_source']}")
    print(f"log: {log_path}")
    append_json_rows(args.json, [row])
    return code


if __name__ == "__main__":
    sys.exit(main())
