"""raycluster.curation: balanced sampling down a hierarchy, semantic dedup, their jobs' errors."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raycluster.curation.dedup import DedupConfig, dedup_table, duplicate_groups
from raycluster.curation.sampling import SamplingConfig, curate, leaf_quotas, water_fill


def test_water_fill_is_even_where_sizes_allow():
    assert water_fill(np.array([100, 100, 100]), 30).tolist() == [10, 10, 10]
    assert water_fill(np.array([2, 100, 100]), 30).tolist() == [2, 14, 14]
    assert water_fill(np.array([5, 5]), 100).tolist() == [5, 5]          # capped at what exists
    assert water_fill(np.array([3, 3, 3]), 2).sum() == 2


def test_leaf_quotas_split_evenly_at_the_top_then_down_the_tree():
    # two top clusters: one with a single huge leaf, one with three small leaves
    leaf_sizes = np.array([1000, 10, 10, 10])
    parents = [np.array([0, 1, 1, 1])]
    quota = leaf_quotas(leaf_sizes, parents, 40)
    assert quota.tolist() == [20, 7, 7, 6] or sorted(quota[1:].tolist()) == [6, 7, 7]
    assert quota[0] == 20 and quota.sum() == 40


def write_assignments(path, clusters_l1, parents, confidence):
    n = len(clusters_l1)
    table = pa.table({"key": [f"k{i:05d}" for i in range(n)], "cluster": clusters_l1,
                      "confidence": pa.array(confidence, pa.float32()), "label": np.full(n, -1),
                      "cluster_l1": clusters_l1, "cluster_l2": parents[clusters_l1]})
    path.mkdir()
    pq.write_table(table.slice(0, n // 2), path / "part-00000.parquet")
    pq.write_table(table.slice(n // 2), path / "part-00001.parquet")


def test_curate_spreads_over_top_clusters_and_takes_the_closest(tmp_path):
    rng = np.random.default_rng(0)
    leaves = np.concatenate([np.zeros(900, int), np.full(50, 1), np.full(50, 2)])   # leaf 0 dominates
    parents = np.array([0, 1, 1])
    confidence = rng.uniform(size=1000)
    write_assignments(tmp_path / "a", leaves, parents, confidence)
    table = curate(str(tmp_path / "a"), SamplingConfig(100))
    picked = table.to_pandas()
    assert len(picked) == 100 and picked["key"].is_unique
    assert (picked["cluster_l2"] == 0).sum() == 50 and (picked["cluster_l2"] == 1).sum() == 50
    top0 = confidence[leaves == 0]
    assert set(picked[picked["cluster"] == 0]["confidence"].round(5)) == set(np.sort(top0)[-50:].astype(np.float32).round(5))
    random = curate(str(tmp_path / "a"), SamplingConfig(100, "random", seed=1)).to_pandas()
    assert (random["cluster_l2"] == 0).sum() == 50 and set(random["key"]) != set(picked["key"])
    with pytest.raises(ValueError, match="size=2000 is more than the 1000 rows"):
        curate(str(tmp_path / "a"), SamplingConfig(2000))
    with pytest.raises(ValueError, match="within_leaf"):
        SamplingConfig(10, "nearest")
    with pytest.raises(ValueError, match="size must be >= 1"):
        SamplingConfig(0)


def test_duplicate_groups_keep_one_per_group():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 32)).astype(np.float32)
    copies = base[[0, 0, 5]] + 0.01 * rng.normal(size=(3, 32)).astype(np.float32)   # 0 has two copies, 5 one
    vectors = np.concatenate([base, copies])
    keys = np.array([f"k{i:02d}" for i in range(23)], dtype=object)
    found = duplicate_groups(keys, vectors, DedupConfig(0.99, keep="earliest"))
    groups = found["group"]
    assert groups[0] == groups[20] == groups[21] >= 0 and groups[5] == groups[22] >= 0 and groups[0] != groups[5]
    assert (groups[[i for i in range(20) if i not in (0, 5)]] == -1).all()
    assert found["kept"][0] and found["kept"][5] and not found["kept"][[20, 21, 22]].any()   # earliest keys kept
    assert (~found["kept"]).sum() == 3
    # within clusters: a copy put in another cluster than its original is not found
    split = dedup_table(keys, np.r_[np.zeros(20, int), 1, 0, 0], vectors, DedupConfig(0.99))
    assert (~split["kept"]).sum() == 2


def test_duplicate_groups_do_not_chain():
    """a ~ b and b ~ c but not a ~ c: connected components made one group of all three (on real
    photos, thousands of distinct images in a few groups); a star group holds only b's duplicates."""
    angles = np.radians([0.0, 20.0, 40.0, 90.0])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)   # cos 20 deg = 0.94
    keys = np.array(["a", "b", "c", "d"], dtype=object)
    found = duplicate_groups(keys, vectors, DedupConfig(0.9))
    assert found["kept"].tolist() == [False, True, False, True]   # b (two duplicates) kept, a and c removed
    found = duplicate_groups(keys, vectors, DedupConfig(0.9, keep="earliest"))
    assert found["kept"].tolist() == [True, False, True, True]    # a keeps b; c is not a's duplicate


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_threshold_outside_0_1_is_a_clear_error(threshold):
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        DedupConfig(threshold)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_hkmeans_run_then_curate_and_dedup_jobs(compose_config, ray_local, tmp_path):
    import json
    import os

    from raycluster.app.curation import run_curate, run_dedup
    from raycluster.app.pipeline import run_train

    cfg = compose_config(["method=hkmeans", "method.levels=[30,10,3]", "report=true"])
    summary = run_train(cfg)
    table = pq.read_table(summary["outputs"]["assignments"])
    assert {"cluster_l1", "cluster_l2", "cluster_l3"} <= set(table.column_names) and table.num_rows == 1797
    assert summary["metrics"]["clusters_used_l3"] == 3 and "acc_l2" in summary["metrics"]
    page = open(summary["outputs"]["report"]).read()
    assert page.count("<details data-top=") == 3 and "sub-clusters" in page

    curated = run_curate(cfg.output_dir, SamplingConfig(300))
    picked = pq.read_table(curated["output"]).to_pandas()
    assert len(picked) == 300 and curated["top_level_clusters"] == 3
    top_sizes = table.column("cluster_l3").to_pandas().value_counts().sort_index().to_numpy()
    got = picked["cluster_l3"].value_counts().sort_index().to_numpy()
    assert got.tolist() == water_fill(top_sizes, 300).tolist()   # as even as the top clusters' sizes allow

    result = run_dedup(cfg.output_dir, DedupConfig(0.995))
    kept = pq.read_table(os.path.join(result["output_dir"], "kept.parquet"))
    removed = pq.read_table(os.path.join(result["output_dir"], "removed.parquet"))
    assert kept.num_rows + removed.num_rows == 1797 and result["removed"] == removed.num_rows
    assert json.load(open(os.path.join(result["output_dir"], "summary.json")))["groups"] == result["groups"]
    assert os.path.exists(result["page"])


@pytest.mark.parametrize("job, args, message", [
    ("curate.py", ["size=0"], "size must be >= 1"),
    ("dedup.py", ["threshold=1.5"], "threshold must be in (0, 1]"),
    ("dedup.py", ["keep=first"], "keep must be central or earliest"),
])
def test_curation_jobs_reject_bad_settings_before_reading_anything(job, args, message, tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    result = subprocess.run([sys.executable, str(REPO / "jobs" / job), f"run_dir={tmp_path}", *args],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-1500:]
