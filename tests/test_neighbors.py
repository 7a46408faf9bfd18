"""Sharded FAISS neighbourhoods: exact merge, save/load, IVF recall, the graph job, errors."""
from __future__ import annotations

import numpy as np
import pytest

from raycluster.data.store import EmbeddingStore, EmbeddingWidthError
from raycluster.neighbors.index import IndexSpec, build_index, merge_topk


def mixture(n: int, dim: int, centres: int, seed: int = 0, spread: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim)).astype(np.float32)
    component = rng.integers(0, centres, size=n)
    return (means[component] + spread * rng.normal(size=(n, dim))).astype(np.float32), component


def write_store(root, vectors: np.ndarray, parts: int) -> EmbeddingStore:
    store = EmbeddingStore(str(root))
    for part, rows in enumerate(np.array_split(np.arange(len(vectors)), parts)):
        store.write_part(f"p{part:03d}", [f"{i:06d}" for i in rows], np.zeros(len(rows), np.int64), vectors[rows],
                         from_shard=False)
    return store


def exact_knn(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = q @ unit.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def test_merge_topk_is_exact_and_handles_missing_results():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 12)).astype(np.float32)
    ids = np.arange(60).reshape(5, 12)
    best = np.argsort(-scores, axis=1)[:, :4]
    merged_scores, merged_ids = merge_topk([scores[:, :7], scores[:, 7:]], [ids[:, :7], ids[:, 7:]], 4, True)
    assert np.array_equal(merged_ids, np.take_along_axis(ids, best, axis=1))
    # L2: smaller is closer; id -1 (a shard with fewer than k rows) never wins
    distances = np.array([[0.5, 0.1], [0.2, 0.9]], np.float32)
    _, merged = merge_topk([distances[:, :1], distances[:, 1:]], [np.array([[1], [-1]]), np.array([[2], [3]])], 2,
                           False)
    assert merged.tolist() == [[2, 1], [3, -1]]


def test_index_spec_validates_and_names_factory_strings():
    assert IndexSpec(kind="ivf_pq", pq_m=16).factory_string(128, 1_000_000) == "IVF4000,PQ16x8"
    assert IndexSpec(kind="hnsw", hnsw_m=16).factory_string(64, 10) == "HNSW16,Flat"
    assert IndexSpec(kind="ivf_flat").lists_for(1000) == 25   # >= 39 training points per list
    with pytest.raises(ValueError, match="kind"):
        IndexSpec(kind="ivf")
    with pytest.raises(ValueError, match="divide"):
        IndexSpec(kind="ivf_pq", pq_m=7).factory_string(64, 1000)
    with pytest.raises(ValueError, match="training sample"):
        build_index(IndexSpec(kind="ivf_flat"), 8, 1000)


def test_sharded_exact_search_equals_single_index_and_survives_save_load(tmp_path, ray_local):
    from raycluster.neighbors.sharded import ShardedIndex

    vectors, _ = mixture(3000, 32, 20)
    store = write_store(tmp_path / "store", vectors, parts=5)
    queries = vectors[::37]
    want_scores, want_ids = exact_knn(vectors, queries, 15)

    sharded = ShardedIndex.build(store, IndexSpec(kind="flat"), num_shards=3)
    assert sharded.counts == [1200, 1200, 600] and sharded.ntotal == 3000
    scores, ids, keys = sharded.search(queries, 15, with_keys=True)
    assert np.array_equal(ids, want_ids) and np.allclose(scores, want_scores, atol=1e-5)
    assert keys[0, 0] == "000000" and all(keys[i, 0] == f"{i * 37:06d}" for i in range(len(queries)))

    sharded.save(str(tmp_path / "index"))
    loaded = ShardedIndex.load(str(tmp_path / "index"))
    assert loaded.counts == sharded.counts
    assert np.array_equal(loaded.search(queries, 15)[1], want_ids)

    with pytest.raises(EmbeddingWidthError, match="32-wide"):
        loaded.search(queries[:, :16], 5)
    with pytest.raises(ValueError, match="larger than the 3000 indexed"):
        loaded.search(queries, 3001)
    with pytest.raises(ValueError, match="every shard needs at least one part"):
        ShardedIndex.build(store, IndexSpec(kind="flat"), num_shards=6)
    with pytest.raises(FileNotFoundError, match="index.json"):
        ShardedIndex.load(str(tmp_path / "nowhere"))
    for index in (sharded, loaded):
        index.shutdown()


def test_ivf_recall_on_clustered_data(tmp_path, ray_local):
    from raycluster.neighbors.sharded import ShardedIndex

    vectors, _ = mixture(20000, 64, 100, seed=1)
    store = write_store(tmp_path / "store", vectors, parts=4)
    queries = vectors[np.random.default_rng(2).choice(len(vectors), 500, replace=False)]
    _, exact = exact_knn(vectors, queries, 10)
    for spec, floor in ((IndexSpec(kind="ivf_flat", nprobe=8), 0.9), (IndexSpec(kind="hnsw", ef_search=64), 0.9)):
        index = ShardedIndex.build(store, spec, num_shards=2)
        _, found = index.search(queries, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])
        assert recall >= floor, (spec.kind, recall)
        index.shutdown()


def test_knn_graph_job_writes_parts_excludes_self_and_resumes(tmp_path, ray_local):
    from raycluster.neighbors.graph import build_knn_graph, read_graph
    from raycluster.neighbors.sharded import ShardedIndex

    vectors, _ = mixture(2000, 16, 10, seed=3)
    store = write_store(tmp_path / "store", vectors, parts=4)
    index = ShardedIndex.build(store, IndexSpec(kind="flat"), num_shards=2)
    out = tmp_path / "graph"
    summary = build_knn_graph(store, index, str(out), k=5, batch_size=256)
    assert summary.parts_written == 4 and summary.rows == 2000
    graph = read_graph(str(out)).to_pydict()
    keys = graph["key"]
    assert len(keys) == 2000 and len(set(keys)) == 2000
    _, exact = exact_knn(vectors, vectors[:50], 6)
    for row in range(50):
        assert keys[row] == f"{row:06d}"
        assert graph["neighbors"][row] == [f"{i:06d}" for i in exact[row][1:]]      # itself dropped
        assert graph["similarities"][row] == sorted(graph["similarities"][row], reverse=True)

    (out / "part-p001.parquet").unlink()
    again = build_knn_graph(store, index, str(out), k=5, batch_size=256)
    assert again.parts_skipped == 3 and again.parts_written == 1 and again.rows == 500
    with pytest.raises(ValueError, match="k=2000"):
        build_knn_graph(store, index, str(tmp_path / "g2"), k=2000)
    index.shutdown()


@pytest.mark.slow
def test_neighbors_job_builds_then_reuses_the_index(compose_config, ray_local):
    """jobs/neighbors.py's library call on the embedded default (digits -> shards -> pixels)."""
    from raycluster.app.neighbors import run_neighbors

    cfg = compose_config(["neighbors=hnsw", "neighbors.shards=2", "neighbors.k=5"])
    first = run_neighbors(cfg)
    assert first["index_built"] and first["vectors"] == 1797 and sum(first["shards"]) == 1797
    assert first["graph_rows"] == 1797 and first["graph_parts_written"] == 6
    again = run_neighbors(cfg)
    assert not again["index_built"] and again["graph_parts_reused"] == 6 and again["graph_rows"] == 0
    with pytest.raises(ValueError, match="every shard needs at least one part"):
        run_neighbors(compose_config(["neighbors.shards=7", "output_dir=" + cfg.output_dir + "-b"]))
