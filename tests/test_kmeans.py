"""raycluster.methods.kmeans: FAISS k-means behind the method interface, and k-means on a UMAP manifold."""
import numpy as np
import pytest

from raycluster.methods.kmeans import KMeans, UMAPKMeans, manifold_kmeans
from raycluster.metrics import cluster_acc


def test_kmeans_recovers_separated_blobs_with_confidences():
    from sklearn.datasets import make_blobs

    vectors, labels = make_blobs(600, n_features=8, centers=4, cluster_std=0.5, random_state=0)
    model = KMeans(4, seed=0).fit(vectors.astype(np.float32))
    clusters, confidence = model.predict(vectors.astype(np.float32))
    assert cluster_acc(labels, clusters) == 1.0
    assert clusters.dtype == np.int64 and ((confidence > 0.25) & (confidence <= 1)).all()
    with pytest.raises(ValueError, match="width 3"):
        model.predict(np.zeros((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="fit"):
        KMeans(4).predict(vectors)


def test_manifold_kmeans_follows_curved_clusters_that_kmeans_cuts_across():
    from sklearn.datasets import make_moons

    vectors, labels = make_moons(600, noise=0.04, random_state=0)
    vectors = vectors.astype(np.float32)
    plain, _ = KMeans(2, seed=0).fit(vectors).predict(vectors)
    manifold = manifold_kmeans(vectors, 2, n_components=2, metric="euclidean", seed=0)
    assert cluster_acc(labels, plain) < 0.9          # k-means splits the moons across
    assert cluster_acc(labels, manifold) > 0.97      # UMAP keeps each moon whole
    sampled = manifold_kmeans(vectors, 2, n_components=2, metric="euclidean", max_points=400, seed=0)
    assert (sampled == -1).sum() == 200 and set(np.unique(sampled[sampled >= 0])) == {0, 1}
    with pytest.raises(ValueError, match="k=3 clusters is more than the 2 samples"):
        manifold_kmeans(vectors[:2], 3)


def test_umap_kmeans_predicts_new_rows_through_the_fitted_map():
    from sklearn.datasets import make_moons

    vectors, labels = make_moons(800, noise=0.04, random_state=1)
    vectors = vectors.astype(np.float32)
    model = UMAPKMeans(2, n_components=2, metric="euclidean", seed=0).fit(vectors[:600])
    clusters, confidence = model.predict(vectors[600:])      # rows UMAP has not seen
    assert cluster_acc(labels[600:], clusters) > 0.95 and ((confidence > 0) & (confidence <= 1)).all()
    with pytest.raises(ValueError, match="width 3, fitted on 2"):
        model.predict(np.zeros((2, 3), np.float32))
