"""raycluster.methods.hkmeans.method: levels, the split route for large K, resampling, bad levels."""
import numpy as np
import pytest

from raycluster.methods.hkmeans.method import HierarchicalKMeans, shares, split_kmeans
from raycluster.metrics import supervised_metrics


def tree(n_per_leaf=40, seed=0):
    rng = np.random.default_rng(seed)
    top = rng.normal(0, 12, (4, 16))
    mid = np.repeat(top, 5, 0) + rng.normal(0, 3, (20, 16))
    leaf_of = np.repeat(np.arange(20), n_per_leaf)
    vectors = (mid[leaf_of] + rng.normal(0, 0.5, (len(leaf_of), 16))).astype(np.float32)
    return vectors, leaf_of, leaf_of // 5


def test_levels_recover_a_two_level_tree_and_every_row_has_a_path():
    vectors, leaf, top = tree()
    model = HierarchicalKMeans([20, 4], seed=0).fit(vectors)
    paths = model.predict_levels(vectors)
    assert paths.shape == (800, 2) and paths.dtype == np.int64
    assert supervised_metrics(leaf, paths[:, 0])["acc"] == 1.0
    assert supervised_metrics(top, paths[:, 1])["acc"] == 1.0
    assert np.array_equal(model.parents[0][paths[:, 0]], paths[:, 1])   # the tree is consistent
    cluster, confidence = model.predict(vectors)
    assert np.array_equal(cluster, paths[:, 0]) and ((confidence > 0) & (confidence <= 1)).all()


def test_large_k_splits_coarse_clusters_with_shares_summing_to_k():
    assert shares(np.array([50, 30, 20]), 10).tolist() == [5, 3, 2]
    assert shares(np.array([1, 1, 98]), 10).sum() == 10 and shares(np.array([1, 1, 98]), 10)[0] == 1
    vectors, leaf, _ = tree(n_per_leaf=60)
    centroids = split_kmeans(vectors, 20, seed=0)
    assert centroids.shape == (20, 16)
    model = HierarchicalKMeans([20, 4], split_above=10, seed=0).fit(vectors)
    assert supervised_metrics(leaf, model.predict(vectors)[0])["nmi"] > 0.95


def test_resampling_refinement_runs_and_keeps_the_tree():
    vectors, leaf, _ = tree()
    model = HierarchicalKMeans([20, 4], resampling_steps=2, points_per_cluster=10, seed=0).fit(vectors)
    assert supervised_metrics(leaf, model.predict(vectors)[0])["nmi"] > 0.95


@pytest.mark.parametrize("levels", [[10, 10], [4, 20], [1], []])
def test_levels_that_do_not_decrease_are_one_clear_error(levels):
    with pytest.raises(ValueError, match="decreasing"):
        HierarchicalKMeans(levels)
