import numpy as np
import pytest

from raycluster import metrics


def test_acc_is_invariant_to_cluster_relabelling():
    labels = np.array([0, 0, 1, 1, 2, 2])
    clusters = np.array([2, 2, 0, 0, 1, 1])
    assert metrics.cluster_acc(labels, clusters) == 1.0


def test_acc_hand_computed():
    # Best mapping: cluster 0 -> class 0 (2 hits), cluster 1 -> class 1 (2 hits); 4 of 6.
    labels = np.array([0, 0, 0, 1, 1, 1])
    clusters = np.array([0, 0, 1, 1, 1, 0])
    assert metrics.cluster_acc(labels, clusters) == pytest.approx(4 / 6)


def test_acc_with_more_clusters_than_classes():
    labels = np.array([0, 0, 1, 1])
    clusters = np.array([0, 1, 2, 3])  # only two clusters can be matched: 2 of 4
    assert metrics.cluster_acc(labels, clusters) == 0.5


def test_supervised_metrics_perfect_and_shape_check():
    labels = np.array([0, 1, 2, 0, 1, 2])
    scores = metrics.supervised_metrics(labels, labels + 5)
    assert scores == pytest.approx({"acc": 1.0, "nmi": 1.0, "ari": 1.0})
    with pytest.raises(ValueError, match="shape"):
        metrics.supervised_metrics(labels, labels[:3])


def test_size_entropy_bounds():
    assert metrics.size_entropy(np.array([0, 1, 2, 3]), 4) == pytest.approx(1.0)
    assert metrics.size_entropy(np.zeros(10, dtype=int), 4) == 0.0
    # two of four clusters used equally: log 2 / log 4
    assert metrics.size_entropy(np.array([0, 0, 1, 1]), 4) == pytest.approx(0.5)


def test_silhouette_separates_good_from_bad_clusterings():
    rng = np.random.default_rng(0)
    centers = np.array([[1.0, 0.0], [0.0, 1.0]])
    labels = np.repeat([0, 1], 50)
    vectors = centers[labels] + 0.05 * rng.normal(size=(100, 2))
    good = metrics.silhouette_sample(vectors, labels)
    bad = metrics.silhouette_sample(vectors, rng.integers(0, 2, 100))
    assert good > 0.8 and bad < 0.2
    assert metrics.silhouette_sample(vectors, np.zeros(100, dtype=int)) is None


def test_table_metrics_equal_scikit_learns_scores():
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    for classes, clusters in ((3, 3), (5, 8), (10, 4)):
        labels = rng.integers(0, classes, 400)
        assigned = np.where(rng.uniform(size=400) < 0.6, labels % clusters, rng.integers(0, clusters, 400))
        table = metrics.contingency(labels, assigned)
        got = metrics.table_metrics(table)
        assert got["acc"] == pytest.approx(metrics.cluster_acc(labels, assigned))
        assert got["nmi"] == pytest.approx(skm.normalized_mutual_info_score(labels, assigned), abs=1e-9)
        assert got["ari"] == pytest.approx(skm.adjusted_rand_score(labels, assigned), abs=1e-9)
