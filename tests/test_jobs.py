"""The jobs as a user runs them: command lines, exit codes, one readable error line."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_job(script, *overrides, tmp_path, timeout=240):
    args = [sys.executable, str(REPO / "jobs" / script), f"cache_dir={tmp_path}/cache", f"output_dir={tmp_path}/run",
            *overrides]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.mark.parametrize("override, message", [
    ("method=nope", "Could not find 'method/nope'"),          # unknown group option (Hydra lists the choices)
    ("data.nmu_clusters=3", "nmu_clusters"),                  # typo in a key
])
def test_config_typos_fail_fast_with_hydra_message(override, message, tmp_path):
    result = run_job("train.py", override, tmp_path=tmp_path, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_missing_data_path_is_one_line(tmp_path):
    result = run_job("train.py", "data=mnist", "data.source.path=/nonexistent/mnist", tmp_path=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "error: MNIST file t10k-images-idx3-ubyte[.gz] not found in '/nonexistent/mnist'" in result.stderr
    assert "Traceback" not in result.stderr


def test_make_shards_then_extract_cli(tmp_path):
    made = run_job("make_shards.py", "data.samples_per_shard=600", tmp_path=tmp_path, timeout=60)
    assert made.returncode == 0, made.stderr
    assert "wrote 1797 samples in 3 shards" in made.stdout
    again = run_job("make_shards.py", "data.samples_per_shard=600", tmp_path=tmp_path, timeout=60)
    assert "found existing 1797 samples in 3 shards" in again.stdout  # never rewritten
    extracted = run_job("extract.py", tmp_path=tmp_path)
    assert extracted.returncode == 0, extracted.stderr[-2000:]
    assert "embedded 1797 samples (0 corrupt skipped) from 3 shards" in extracted.stdout
