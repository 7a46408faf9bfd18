"""raycluster.neighbors.manifold: UMAP with an exact FAISS k-NN graph instead of NN-descent."""
import numpy as np
import pytest

from raycluster.neighbors.manifold import SMALL_DATA_ROWS, exact_knn, umap_embedding


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_exact_knn_matches_brute_force(metric):
    rows = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    indices, distances = exact_knn(rows, 6, metric)
    if metric == "cosine":
        unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        full = 1.0 - unit @ unit.T
    else:
        full = np.sqrt(((rows[:, None] - rows[None]) ** 2).sum(-1))
    expected = np.argsort(full, axis=1)[:, :6]
    assert indices.shape == (300, 6) and indices.dtype == np.int64 and distances.dtype == np.float32
    assert (indices[:, 0] == np.arange(300)).all() and np.allclose(distances[:, 0], 0, atol=1e-3)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(distances, np.take_along_axis(full, expected, 1), atol=1e-3)
    with pytest.raises(ValueError, match="metric must be"):
        exact_knn(rows, 3, "manhattan")


def test_large_umap_takes_the_exact_graph_and_never_runs_nn_descent(monkeypatch):
    """From SMALL_DATA_ROWS rows on, umap-learn would search with NN-descent: here it must not."""
    import umap.umap_

    def refuse(*args, **kwargs):
        raise AssertionError("NN-descent ran")

    monkeypatch.setattr(umap.umap_, "nearest_neighbors", refuse)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4, 32)) * 10
    labels = rng.integers(0, 4, SMALL_DATA_ROWS + 100)
    rows = (centers[labels] + rng.standard_normal((len(labels), 32))).astype(np.float32)
    for metric in ("euclidean", "cosine"):
        coords = umap_embedding(rows, 2, 15, 0.1, metric, seed=0)
        assert coords.shape == (len(rows), 2) and coords.dtype == np.float32
        # each blob stays together: its points are closer to their own centroid than to any other
        means = np.stack([coords[labels == c].mean(0) for c in range(4)])
        nearest = np.argmin(((coords[:, None] - means[None]) ** 2).sum(-1), axis=1)
        assert (nearest == labels).mean() > 0.99


def test_bank_neighbors_skip_the_query_itself_and_survive_pickling():
    import pickle

    from raycluster.neighbors.manifold import BankNeighbors

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(50, 8)).astype(np.float32)
    neighbors = BankNeighbors(bank, k=3)
    found = neighbors(bank[:10])                      # bank rows: each skips itself
    expected, _ = exact_knn(bank, 4, "cosine")
    np.testing.assert_array_equal(found, expected[:10, 1:])
    outside = rng.normal(size=(5, 8)).astype(np.float32)   # new rows: their 3 nearest, none skipped
    unit = lambda rows: rows / np.linalg.norm(rows, axis=1, keepdims=True)
    nearest = np.argsort(-unit(outside) @ unit(bank).T, axis=1)[:, :3]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(neighbors))(outside), nearest)   # index rebuilt
    with pytest.raises(ValueError, match="k must be in 1..49"):
        BankNeighbors(bank, k=50)
