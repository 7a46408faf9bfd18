"""raycluster.assign: every row assigned once, counts exact, parts written atomically."""
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from raycluster.assign import AssignmentStats, assign_rows, read_assignment_stats
from raycluster.data.rows import StoreRows
from raycluster.methods.kmeans.method import FaissKMeans
from raycluster.metrics import size_entropy, supervised_metrics

from test_rows import make_store


def fitted_kmeans(store, k=5):
    data = store.load()
    return FaissKMeans(k, n_init=1, seed=0).fit(data.vectors), data


def test_stats_equal_the_in_memory_metrics():
    rng = np.random.default_rng(0)
    labels, cluster = rng.integers(0, 7, 5000), rng.integers(0, 9, 5000)
    cluster[:2000] = labels[:2000]   # some agreement, so the scores are not ~0
    confidence = rng.uniform(size=5000).astype(np.float32)
    stats = AssignmentStats(9)
    for chunk in np.array_split(np.arange(5000), 7):
        stats.update(cluster[chunk], confidence[chunk], labels[chunk])
    got = stats.metrics()
    assert got["acc"] == pytest.approx(supervised_metrics(labels, cluster)["acc"])
    from sklearn import metrics as skm

    assert got["nmi"] == pytest.approx(skm.normalized_mutual_info_score(labels, cluster), abs=1e-9)
    assert got["ari"] == pytest.approx(skm.adjusted_rand_score(labels, cluster), abs=1e-9)
    assert got["size_entropy"] == pytest.approx(size_entropy(cluster, 9))
    assert got["mean_confidence"] == pytest.approx(confidence.mean(), rel=1e-5)
    assert stats.confidence_hist.sum() == 5000
    stats.update(np.array([0]), np.array([0.5]), np.array([-1]))   # one unlabelled row: no supervised scores
    assert "acc" not in stats.metrics()
    with pytest.raises(ValueError, match="outside"):
        stats.update(np.array([9]), np.array([0.5]), np.array([0]))


def test_assign_rows_writes_every_row_once_and_picks_the_sample(tmp_path):
    store = make_store(tmp_path / "store")
    method, data = fitted_kmeans(store)
    rows = StoreRows(store, batch_rows=128)
    out = str(tmp_path / "run" / "assignments.parquet")
    stats, picked = assign_rows(method, rows, out, pick_fraction=0.25, seed=0)
    table = pq.read_table(out).to_pandas()
    assert sorted(table["key"]) == sorted(data.keys) and table.columns.tolist() == ["key", "cluster", "confidence", "label"]
    expected, _ = method.predict(data.vectors)
    merged = table.set_index("key").loc[data.keys]
    assert np.array_equal(merged["cluster"].to_numpy(), expected)
    assert stats.rows == 1000 and np.array_equal(stats.sizes, np.bincount(expected, minlength=5))
    assert set(picked["key"]) == set(rows.sample(250, 0).keys)
    assert sorted(os.listdir(tmp_path / "run")) == ["assignments.parquet"]   # no temp folder left
    again, again_picked = read_assignment_stats(out, 5, 0.25, 0)
    assert np.array_equal(again.table, stats.table) and set(again_picked["key"]) == set(picked["key"])


def test_ray_data_actor_pool_gives_the_same_assignments(tmp_path, ray_local):
    store = make_store(tmp_path / "store")
    method, _ = fitted_kmeans(store)
    local = assign_rows(method, StoreRows(store), str(tmp_path / "a"))[0]
    remote = assign_rows(method, StoreRows(store, local_bytes=0, batch_rows=100), str(tmp_path / "b"))[0]
    assert np.array_equal(local.sizes, remote.sizes) and np.array_equal(local.table, remote.table)
    a = pq.read_table(str(tmp_path / "a")).to_pandas().sort_values("key")
    b = pq.read_table(str(tmp_path / "b")).to_pandas().sort_values("key")
    assert a["key"].tolist() == b["key"].tolist() and np.array_equal(a["cluster"], b["cluster"])


def test_a_failed_assignment_leaves_the_previous_output_untouched(tmp_path):
    store = make_store(tmp_path / "store")
    method, _ = fitted_kmeans(store)
    out = str(tmp_path / "assignments.parquet")
    assign_rows(method, StoreRows(store), out)
    before = pq.read_table(out).num_rows

    class Broken:
        n_clusters = 5

        def predict(self, vectors):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        assign_rows(Broken(), StoreRows(store), out)
    assert pq.read_table(out).num_rows == before and sorted(os.listdir(tmp_path)) == ["assignments.parquet", "store"]
