"""raycluster.curation: balanced sampling down a hierarchy, semantic dedup, their jobs' errors."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raycluster.curation.dedup import DedupConfig, dedup_table, final_pairs, probe_clusters
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


def _plain(threshold, **kwargs):
    """Plain cosine, no whitening: the scoring these unit tests reason about."""
    return DedupConfig(threshold, background_rank=0, whiten=0.0, same_image=1.0, **kwargs)


def _groups(keys, vectors, config, probes=None):
    probes = np.zeros(len(keys), np.int64) if probes is None else probes
    return dedup_table(keys, probes, vectors, config)


def test_duplicate_groups_keep_one_per_group():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 32)).astype(np.float32)
    copies = base[[0, 0, 5]] + 0.01 * rng.normal(size=(3, 32)).astype(np.float32)   # 0 has two copies, 5 one
    vectors = np.concatenate([base, copies])
    keys = np.array([f"k{i:02d}" for i in range(23)], dtype=object)
    found = _groups(keys, vectors, _plain(0.99, keep="earliest"))
    groups = found["group"]
    assert groups[0] == groups[20] == groups[21] >= 0 and groups[5] == groups[22] >= 0 and groups[0] != groups[5]
    assert (groups[[i for i in range(20) if i not in (0, 5)]] == -1).all()
    assert found["kept"][0] and found["kept"][5] and not found["kept"][[20, 21, 22]].any()   # earliest keys kept
    assert (~found["kept"]).sum() == 3
    # within clusters: a copy put in another cluster than its original is found only when that
    # cluster is also searched (a second probe)
    home = np.r_[np.zeros(20, int), 1, 0, 0]
    assert (~_groups(keys, vectors, _plain(0.99), home)["kept"]).sum() == 2
    second = np.where(home == 0, 1, 0)
    assert (~_groups(keys, vectors, _plain(0.99), np.stack([home, second], axis=1))["kept"]).sum() == 3


def test_duplicate_groups_do_not_chain():
    """a ~ b and b ~ c but not a ~ c: connected components made one group of all three (on real
    photos, thousands of distinct images in a few groups); a star group holds only b's duplicates."""
    angles = np.radians([0.0, 20.0, 40.0, 90.0])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)   # cos 20 deg = 0.94
    keys = np.array(["a", "b", "c", "d"], dtype=object)
    found = _groups(keys, vectors, _plain(0.9))
    assert found["kept"].tolist() == [False, True, False, True]   # b (two duplicates) kept, a and c removed
    found = _groups(keys, vectors, _plain(0.9, keep="earliest"))
    assert found["kept"].tolist() == [True, False, True, True]    # a keeps b; c is not a's duplicate


def test_background_score_finds_copies_that_plain_cosine_cannot_tell_from_a_dense_neighbourhood():
    """A tight family of distinct images (cosine 0.96 to one another) and, elsewhere, an image
    with a copy at cosine 0.95: no plain-cosine threshold takes the copy and leaves the family;
    subtracting each row's background (its second nearest row's cosine) does."""
    rng = np.random.default_rng(1)
    centre = rng.normal(size=64)
    family = centre + 0.2 * rng.normal(size=(6, 64))             # distinct photos of one scene
    lone = rng.normal(size=(40, 64))
    copy = lone[0] + 0.33 * rng.normal(size=64)
    vectors = np.vstack([family, lone, copy]).astype(np.float32)
    keys = np.array([f"k{i:02d}" for i in range(len(vectors))], dtype=object)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    family_cos = (unit[:6] @ unit[:6].T)[np.triu_indices(6, 1)].min()
    copy_cos = float(unit[6] @ unit[-1])
    assert family_cos > copy_cos      # so a plain threshold that takes the copy takes the family too
    plain = _groups(keys, vectors, _plain(copy_cos - 1e-3))
    assert (~plain["kept"][:6]).any()
    scored = _groups(keys, vectors, DedupConfig(0.3, background_rank=2, whiten=0.0, same_image=1.0))
    removed = set(keys[~scored["kept"]])
    assert removed in ({"k06"}, {keys[-1]}) and scored["group"][6] == scored["group"][-1] >= 0


def test_probes_put_each_row_in_its_own_cluster_and_the_nearest_other():
    means = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)
    vectors = np.array([[1, 0.2], [0.1, 1], [-1, -0.5]], np.float32)
    probed = probe_clusters(vectors, np.array([0, 1, 2]), means, 2)
    assert probed.tolist() == [[0, 1], [1, 0], [2, 0]] or probed.tolist() == [[0, 1], [1, 0], [2, 1]]
    assert probe_clusters(vectors, np.array([0, 1, 2]), means, 1).tolist() == [[0], [1], [2]]


def test_final_pairs_score_against_the_largest_background_and_merge_repeats():
    """A pair found in two clusters comes twice; each row's background is its largest over the
    clusters it was searched in (a cluster sees only part of a row's neighbourhood)."""
    i, j, cosine = np.array([0, 1, 2]), np.array([1, 0, 3]), np.array([0.9, 0.9, 0.9], np.float32)
    bg = np.array([0.5, 0.7, 0.1, 0.6], np.float32)
    assert final_pairs(i, j, cosine, bg, DedupConfig(0.25, same_image=0.95)).tolist() == [[2, 3]]   # 0.9 - 0.7 < 0.25
    assert final_pairs(i, j, cosine, bg, DedupConfig(0.2, same_image=0.95)).tolist() == [[0, 1], [2, 3]]   # repeat merged
    assert final_pairs(i, j, cosine, bg, DedupConfig(0.25, same_image=0.9)).tolist() == [[0, 1], [2, 3]]   # same image


def test_a_large_group_of_one_image_is_found_although_it_raises_its_own_background():
    """Eight near-exact copies of one image: each one's 5th neighbour is another copy, so the
    background score of every pair is ~0; their cosine reaches same_image, so they are one group."""
    rng = np.random.default_rng(2)
    lone = rng.normal(size=(60, 32))
    copies = lone[0] + 0.02 * rng.normal(size=(8, 32))
    vectors = np.vstack([lone, copies]).astype(np.float32)
    keys = np.array([f"k{i:02d}" for i in range(len(vectors))], dtype=object)
    without = _groups(keys, vectors, DedupConfig(0.25, background_rank=5, whiten=0.0, same_image=1.0))
    assert without["kept"].all()
    found = _groups(keys, vectors, DedupConfig(0.25, background_rank=5, whiten=0.0))
    members = [0] + list(range(60, 68))
    assert len(set(found["group"][members])) == 1 and found["group"][0] >= 0 and (~found["kept"]).sum() == 8


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_threshold_outside_0_1_is_a_clear_error(threshold):
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        DedupConfig(threshold)


@pytest.mark.parametrize("field, value, message", [("probes", 0, "probes must be >= 1"),
                                                   ("background_rank", -1, "background_rank must be >= 0"),
                                                   ("whiten", 1.0, r"whiten must be in \[0, 1\)"),
                                                   ("same_image", 0.0, r"same_image must be in \(0, 1\]")])
def test_dedup_settings_out_of_range_are_clear_errors(field, value, message):
    with pytest.raises(ValueError, match=message):
        DedupConfig(0.5, **{field: value})


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

    result = run_dedup(cfg.output_dir, DedupConfig(0.25))
    kept = pq.read_table(os.path.join(result["output_dir"], "kept.parquet"))
    removed = pq.read_table(os.path.join(result["output_dir"], "removed.parquet"))
    assert kept.num_rows + removed.num_rows == 1797 and result["removed"] == removed.num_rows
    assert sorted(kept.column("key").to_pylist() + removed.column("key").to_pylist()) == sorted(table.column("key").to_pylist())
    assert set(removed.column("group").to_pylist()) <= set(kept.column("group").to_pylist())   # each group keeps one
    assert not os.path.exists(os.path.join(result["output_dir"], "records.parquet.tmp"))
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


def test_store_dedup_reads_through_ray_data_and_agrees_with_the_in_memory_table(tmp_path, ray_local):
    """jobs/dedup.py's path over a store that is not read into the caller (local_bytes=0: Ray Data
    groupby over probed clusters, records spilled to Parquet) finds the same groups as
    dedup_table on the same rows in memory."""
    from raycluster.curation.dedup import cluster_means, dedup_store, fit_whitener
    from raycluster.data.rows import StoreRows
    from raycluster.data.store import EmbeddingStore
    from raycluster.methods.kmeans.method import FaissKMeans

    rng = np.random.default_rng(0)
    base = rng.normal(size=(400, 16))
    copies = base[:40] + 0.05 * rng.normal(size=(40, 16))
    vectors = np.vstack([base, copies]).astype(np.float32)
    keys = [f"a{i:03d}" for i in range(400)] + [f"b{i:03d}" for i in range(40)]
    store = EmbeddingStore(str(tmp_path / "store"))
    for part in range(2):
        at = slice(part * 220, (part + 1) * 220)
        store.write_part(f"shard-{part:06d}.tar", keys[at], np.zeros(220, np.int64), vectors[at], from_shard=False)
    config = DedupConfig(0.25)
    method = FaissKMeans(4, n_init=1, seed=0).fit(vectors)
    remote = StoreRows(store, local_bytes=0, batch_rows=64)
    out = list(dedup_store(method, remote, config, str(tmp_path / "records.parquet")))
    streamed = {name: np.concatenate([o[name] for o in out]) for name in ("key", "cluster", "group", "kept")}
    assert sorted(streamed["key"]) == sorted(keys)

    home, _ = method.predict(vectors)
    probed = probe_clusters(vectors, home, cluster_means(method, StoreRows(store)), config.probes)
    table = dedup_table(np.array(keys, dtype=object), probed, fit_whitener(vectors, config)(vectors), config)
    order = np.argsort(streamed["key"])
    assert (streamed["kept"][order] == table["kept"]).all() and (streamed["cluster"][order] == home).all()
    assert (~table["kept"]).sum() >= 36     # most of the 40 copies found
    same_group = [table["group"][i] == table["group"][400 + i] >= 0 for i in range(40)]
    assert sum(same_group) >= 36
