"""The jobs as a user runs them: command lines, exit codes, one readable error line."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def run_job(script, *overrides, tmp_path, timeout=240):
    from conftest import pinned_method

    args = [sys.executable, str(REPO / "jobs" / script), f"cache_dir={tmp_path}/cache", f"output_dir={tmp_path}/run",
            *pinned_method(overrides), *overrides]
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
    assert "error: data.source.path '/nonexistent/mnist' does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_make_shards_then_extract_cli(tmp_path):
    made = run_job("make_shards.py", "data.samples_per_shard=600", tmp_path=tmp_path, timeout=60)
    assert made.returncode == 0, made.stderr
    assert "wrote 1797 samples in 3 shards" in made.stdout
    again = run_job("make_shards.py", "data.samples_per_shard=600", tmp_path=tmp_path, timeout=60)
    assert "found existing 1797 samples in 3 shards" in again.stdout  # never rewritten
    extracted = run_job("extract.py", "data.samples_per_shard=600", tmp_path=tmp_path)
    assert extracted.returncode == 0, extracted.stderr[-2000:]
    assert "embedded 1797 samples (0 corrupt skipped) from 3 shards" in extracted.stdout


@pytest.mark.parametrize("overrides, message", [
    (["data.num_clusters=0"], "data.num_clusters must be >= 2, got 0"),
    (["data.num_clusters=-1"], "data.num_clusters must be >= 2, got -1"),
    (["++method.foo=1"], "unexpected keyword argument 'foo'"),
    (["method=diec", "++method.model.bogus=1"], "diec method.model: unknown setting(s) ['bogus']"),
    (["reuse=sometimes"], "reuse='sometimes': expected auto or strict"),
])
def test_config_errors_stop_before_any_work(overrides, message, tmp_path):
    """Case 6 of the trust issue: these failed after shards, Ray start and extraction, with a trace."""
    result = run_job("train.py", *overrides, tmp_path=tmp_path, timeout=60)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists()   # no shards were built, so no Ray and no extraction either


@pytest.mark.slow
def test_photos_of_mixed_sizes_with_pixels_name_the_setting(tmp_path):
    """Case 5 of the trust issue: a ~60-line RayTaskError instead of one line naming the fix."""
    from raycluster.data.builtin import encode_png

    for index, size in enumerate((4, 4, 6, 6, 4, 6)):
        folder = tmp_path / "photos" / f"class{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index}.png").write_bytes(encode_png(np.zeros((size, size), np.uint8)))
    result = run_job("train.py", "data=folder", f"data.source.path={tmp_path}/photos", "data.num_clusters=2",
                     tmp_path=tmp_path, timeout=240)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert "set backbone.extractor.size" in errors[0]
    assert "Traceback" not in result.stderr
