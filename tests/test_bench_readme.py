"""scripts/bench_readme.py: bench/README.md is what the committed rows in bench/results/ give."""
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("bench_readme", REPO / "scripts" / "bench_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_bench_readme_is_regenerated_from_the_rows():
    result = subprocess.run([sys.executable, "scripts/bench_readme.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_row_carries_its_command_and_machine():
    for path in (REPO / "bench" / "results").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            command = re.sub(r"^([A-Z_]+=\S+ )*", "", row.get("command", ""))   # environment settings first
            assert command.startswith("python bench/") and row.get("machine"), (path.name, row)


def test_a_changed_figure_changes_the_page(tmp_path, monkeypatch):
    script = load_script()
    (tmp_path / "results").mkdir()
    (tmp_path / "quality.py").write_text('"""Clustering quality."""\n')
    row = {"command": "python bench/quality.py", "machine": "2 cores (CPU)", "method": "kmeans", "acc": 0.5}
    (tmp_path / "results" / "quality.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setattr(script, "BENCH", tmp_path)
    monkeypatch.setattr(script, "REPO", tmp_path.parent)
    before = script.render()
    assert "| kmeans | 0.5 |" in before and "`python bench/quality.py` (2 cores (CPU))" in before
    (tmp_path / "results" / "quality.jsonl").write_text(json.dumps({**row, "acc": 0.7}) + "\n")
    assert "| kmeans | 0.7 |" in script.render()
