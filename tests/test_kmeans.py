"""raycluster.methods.kmeans: FAISS k-means behind the method interface, and k-means on a UMAP manifold."""
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from raycluster.methods.kmeans.method import FaissKMeans
from raycluster.methods.kmeans.umap import MAX_REFIT_NEIGHBORS, UMAPKMeans, wider_neighborhood
from raycluster.methods.start import cluster_means, fit_start, manifold_kmeans, manifold_separation, start_clusters
from raycluster.metrics import cluster_acc, size_entropy

from tests.test_cludi import mixture


def test_kmeans_recovers_separated_blobs_with_confidences():
    from sklearn.datasets import make_blobs

    vectors, labels = make_blobs(600, n_features=8, centers=4, cluster_std=0.5, random_state=0)
    model = FaissKMeans(4, seed=0).fit(vectors.astype(np.float32))
    clusters, confidence = model.predict(vectors.astype(np.float32))
    assert cluster_acc(labels, clusters) == 1.0
    assert clusters.dtype == np.int64 and ((confidence > 0.25) & (confidence <= 1)).all()
    with pytest.raises(ValueError, match="width 3"):
        model.predict(np.zeros((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="fit"):
        FaissKMeans(4).predict(vectors)


def test_spherical_kmeans_keeps_the_restart_with_the_highest_summed_cosine():
    from sklearn.datasets import make_blobs

    vectors, _ = make_blobs(2000, n_features=16, centers=30, cluster_std=2.0, random_state=0)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    def summed_cosine(model):
        return float((vectors @ model.centroids.T).max(axis=1).sum())

    for seed in range(3):   # n_init=1 runs the first of the n_init=10 restarts
        first = summed_cosine(FaissKMeans(30, n_init=1, seed=seed, spherical=True).fit(vectors))
        best = summed_cosine(FaissKMeans(30, n_init=10, seed=seed, spherical=True).fit(vectors))
        assert best >= first - 1e-3   # FAISS maximises the cosine sum; keeping the lowest kept the worst


def three_equal_clusters_one_wide():
    """900 x 2: a wide uniform strip and two tight blobs 2 apart, 300 each. k-means' lowest
    objective halves the strip and merges the blobs; one cluster per group costs ~2% more."""
    rng = np.random.default_rng(0)
    strip = np.c_[rng.uniform(-10, -10 + np.sqrt(33), 300), rng.normal(0, 0.3, 300)]
    blobs = [np.c_[rng.normal(centre, 0.3, 300), rng.normal(0, 0.3, 300)] for centre in (2, 4)]
    return np.vstack([strip, *blobs]).astype(np.float32), np.repeat([0, 1, 2], 300)


def test_balance_tolerance_prefers_even_sizes_among_near_tied_restarts():
    vectors, labels = three_equal_clusters_one_wide()
    lowest, _ = FaissKMeans(3, seed=0).fit(vectors).predict(vectors)
    assert cluster_acc(labels, lowest) < 0.6 and size_entropy(lowest, 3) < 0.85
    balanced, _ = FaissKMeans(3, seed=0, balance_tolerance=0.05).fit(vectors).predict(vectors)
    assert cluster_acc(labels, balanced) == 1.0
    far, _ = FaissKMeans(3, seed=0, balance_tolerance=0.005).fit(vectors).predict(vectors)
    assert cluster_acc(labels, far) < 0.6          # a 2% costlier solution is no near-tie at 0.5%
    with pytest.raises(ValueError, match="balance_tolerance"):
        FaissKMeans(3, balance_tolerance=-0.1)


def test_manifold_kmeans_follows_curved_clusters_that_kmeans_cuts_across():
    from sklearn.datasets import make_moons

    vectors, labels = make_moons(600, noise=0.04, random_state=0)
    vectors = vectors.astype(np.float32)
    plain, _ = FaissKMeans(2, seed=0).fit(vectors).predict(vectors)
    manifold = manifold_kmeans(vectors, 2, n_components=2, metric="euclidean", seed=0)
    assert cluster_acc(labels, plain) < 0.9          # k-means splits the moons across
    assert cluster_acc(labels, manifold) > 0.97      # UMAP keeps each moon whole
    sampled = manifold_kmeans(vectors, 2, n_components=2, metric="euclidean", max_points=400, seed=0)
    assert (sampled == -1).sum() == 200 and set(np.unique(sampled[sampled >= 0])) == {0, 1}
    with pytest.raises(ValueError, match="k=3 clusters is more than the 2 samples"):
        manifold_kmeans(vectors[:2], 3)


def test_start_clusters_scores_both_starts_and_centres_the_manifold_clusters():
    from sklearn.datasets import make_moons

    vectors, labels = make_moons(600, noise=0.04, random_state=0)
    vectors = vectors.astype(np.float32)
    centers, initial, scores = start_clusters(vectors, 2, manifold={"n_components": 2, "metric": "euclidean"},
                                              labels=labels)
    assert scores["init_kmeans"]["acc"] < 0.9 < 0.97 < scores["init_manifold"]["acc"]
    assert np.allclose(centers, [vectors[initial == k].mean(0) for k in range(2)], atol=1e-5)
    assert scores["start_umap_neighbors"] == 15   # no tiny cluster: UMAP's first neighbourhood kept
    plain_centers, none, plain_scores = start_clusters(vectors, 2, labels=np.full(600, -1))
    # unknown labels: no supervised scores, only the start's label-free size entropy
    assert none is None and set(plain_scores) == {"start_size_entropy"} and plain_centers.shape == (2, 2)
    # the fitted starter assigns any row: a fitted row keeps its start cluster (DiEC's output=start)
    start = fit_start(vectors, 2, manifold={"n_components": 2, "metric": "euclidean"})
    assert (start.starter.predict(vectors)[0] == start.clusters).all()


def test_cluster_means_ignore_unclustered_rows_and_keep_a_fallback_for_empty_clusters():
    vectors = np.array([[0, 0], [2, 0], [10, 10], [7, 7]], np.float32)
    means = cluster_means(vectors, np.array([0, 0, 1, -1]), np.full((3, 2), -5.0))
    assert means.tolist() == [[1, 0], [10, 10], [-5, -5]]


def test_umap_kmeans_predicts_new_rows_through_the_fitted_map():
    from sklearn.datasets import make_moons

    vectors, labels = make_moons(800, noise=0.04, random_state=1)
    vectors = vectors.astype(np.float32)
    model = UMAPKMeans(2, n_components=2, metric="euclidean", seed=0).fit(vectors[:600])
    clusters, confidence = model.predict(vectors[600:])      # rows UMAP has not seen
    assert cluster_acc(labels[600:], clusters) > 0.95 and ((confidence > 0) & (confidence <= 1)).all()
    with pytest.raises(ValueError, match="width 3, fitted on 2"):
        model.predict(np.zeros((2, 3), np.float32))


def test_wider_neighborhood_is_a_share_of_the_mean_cluster_size_within_bounds():
    assert wider_neighborhood(1797, 10, 0.25, 15) == 45          # the 8x8 digits
    assert wider_neighborhood(10_000, 10, 0.25, 15) == MAX_REFIT_NEIGHBORS
    assert wider_neighborhood(1000, 100, 0.25, 15) == 15          # small clusters: never narrower than asked
    assert wider_neighborhood(1797, 10, 0.0, 15) == 15


def test_min_cluster_share_refits_umap_once_with_a_wider_neighbourhood():
    """Ten blobs, two of them touching, and a tight 15-row group far off blob 0: at 15 neighbours
    UMAP isolates the group and the mixture merges the touching pair to stay at 10. With
    min_cluster_share the fit is made again at the wider neighbourhood; this group is far enough
    to survive it, so it is kept (a rare class is not forced into another)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (10, 8)) * 8
    centers[9] = centers[8] + 2.0
    blobs = np.concatenate([c + rng.normal(0, 1, (100, 8)) for c in centers])
    group = centers[0] + np.r_[12.0, np.zeros(7)] + rng.normal(0, 0.3, (15, 8))
    vectors = np.concatenate([blobs, group]).astype(np.float32)
    settings = {"metric": "euclidean", "clusterer": "gmm", "seed": 0}
    plain = UMAPKMeans(10, **settings).fit(vectors)
    assert plain.used_neighbors == 15 and np.bincount(plain.fit_clusters).min() == 15
    checked = UMAPKMeans(10, min_cluster_share=0.25, **settings).fit(vectors)
    assert checked.used_neighbors == wider_neighborhood(1015, 10, 0.25, 15) == 26
    assert np.bincount(checked.fit_clusters).min() == 15
    balanced = UMAPKMeans(10, min_cluster_share=0.25, **settings).fit(blobs.astype(np.float32))
    assert balanced.used_neighbors == 15   # no cluster under a quarter of the mean: one fit
    with pytest.raises(ValueError, match="min_cluster_share must be in"):
        UMAPKMeans(10, min_cluster_share=1.0)


def test_consensus_clusters_keeps_the_rows_most_partitions_put_together():
    """Three partitions of four groups, relabelled per partition; one merged group 0 into group 1.
    The consensus recovers the four groups (up to names), and a partition is its own consensus."""
    from raycluster.methods.kmeans.umap import consensus_clusters

    groups = np.repeat(np.arange(4), 50)
    partitions = np.stack([(groups + shift) % 4 for shift in range(3)])
    partitions[1, groups == 0] = partitions[1, groups == 1][0]
    assert adjusted_rand_score(groups, consensus_clusters(partitions, 4)) == 1.0
    assert adjusted_rand_score(partitions[1], consensus_clusters(partitions[1:2], 4)) == 1.0


def test_umap_restarts_output_the_consensus_of_the_one_seed_fits():
    """Ten blobs, two of them touching: with umap_restarts=3 the clusters are `consensus_clusters`
    of the fits at seeds 5, 6, 7 (each as fitted at that seed alone), with each fit's ARI against it."""
    from raycluster.methods.kmeans.umap import consensus_clusters

    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (10, 8)) * 8
    centers[9] = centers[8] + 2.0
    vectors = np.concatenate([c + rng.normal(0, 1, (60, 8)) for c in centers]).astype(np.float32)
    settings = {"metric": "euclidean", "clusterer": "gmm", "n_init": 2, "min_cluster_share": 0.25}
    restarted = UMAPKMeans(10, seed=5, umap_restarts=3, **settings).fit(vectors)
    alone = [UMAPKMeans(10, seed=seed, **settings).fit(vectors) for seed in (5, 6, 7)]
    partitions = np.stack([fit.fit_clusters for fit in alone])
    assert np.array_equal(restarted.fit_clusters, consensus_clusters(partitions, 10, 5, 2))
    assert restarted.restart_agreement == [round(adjusted_rand_score(restarted.fit_clusters, p), 4) for p in partitions]
    assert restarted.used_neighbors == max(fit.used_neighbors for fit in alone) and restarted.embedded is None
    assert adjusted_rand_score(np.repeat(np.arange(10), 60), restarted.fit_clusters) > 0.9
    assert UMAPKMeans(10, **settings).fit(vectors).restart_agreement == []   # one fit: nothing to agree with
    with pytest.raises(ValueError, match="umap_restarts must be >= 1"):
        UMAPKMeans(10, umap_restarts=0)


def test_umap_gmm_follows_sheared_blobs_that_kmeans_cuts():
    """scikit-learn's sheared blobs (its k-means assumptions example), given to the clusterers as
    UMAP's output would be: k-means' lowest objective cuts across them, the mixture does not."""
    from sklearn.datasets import make_blobs

    points, labels = make_blobs(n_samples=900, random_state=170)
    embedded = (points @ np.array([[0.6, -0.6], [-0.4, 0.8]])).astype(np.float32)
    by_kmeans, kmeans = UMAPKMeans(3, n_init=5, seed=0)._cluster(embedded, 0)
    by_mixture, no_index = UMAPKMeans(3, n_init=5, seed=0, clusterer="gmm")._cluster(embedded, 0)
    assert cluster_acc(labels, by_mixture) > 0.99 > 0.9 > cluster_acc(labels, by_kmeans)
    assert no_index is None and np.array_equal(kmeans.predict(embedded)[0], by_kmeans)   # the index that assigns new rows
    with pytest.raises(ValueError, match="clusterer must be one of"):
        UMAPKMeans(3, clusterer="spectral")


def test_lloyd_pass_is_one_exact_lloyd_iteration(tmp_path):
    from raycluster.data.rows import StoreRows
    from raycluster.data.store import EmbeddingStore
    from raycluster.methods.kmeans.lloyd import lloyd_pass

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(900, 5)).astype(np.float32)
    store = EmbeddingStore(str(tmp_path / "store"))
    for part in range(3):
        store.write_part(f"p{part}", [f"k{part}_{i:03d}" for i in range(300)], np.zeros(300, int),
                         vectors[part * 300:(part + 1) * 300], from_shard=False)
    centroids = vectors[:4].copy()
    updated, inertia, counts = lloyd_pass(StoreRows(store, batch_rows=64), centroids)
    distances = ((vectors[:, None, :] - centroids[None]) ** 2).sum(-1)
    nearest = distances.argmin(1)
    assert counts.tolist() == np.bincount(nearest, minlength=4).tolist()
    assert inertia == pytest.approx(distances.min(1).sum(), rel=1e-4)
    assert np.allclose(updated, np.stack([vectors[nearest == k].mean(0) for k in range(4)]), atol=1e-5)


def test_fit_rows_on_a_sample_then_lloyd_passes_matches_full_kmeans(tmp_path):
    """A 64 x K sample alone lands a worse objective than full k-means; the refinement passes over
    every row close the gap (what lets the job fit any N with O(K x D) in the driver)."""
    from sklearn.datasets import make_blobs

    from raycluster.data.rows import StoreRows
    from raycluster.data.store import EmbeddingStore
    from raycluster.methods.kmeans.lloyd import lloyd_pass

    vectors, labels = make_blobs(20000, n_features=16, centers=40, cluster_std=3.0, random_state=0)
    vectors = vectors.astype(np.float32)
    store = EmbeddingStore(str(tmp_path / "store"))
    for part in range(4):
        rows = slice(part * 5000, (part + 1) * 5000)
        store.write_part(f"p{part}", [f"k{i:06d}" for i in range(rows.start, rows.stop)], labels[rows], vectors[rows],
                         from_shard=False)
    rows = StoreRows(store)
    unrefined = FaissKMeans(40, n_init=2, seed=0, max_points_per_centroid=64, refine_passes=0).fit_rows(rows)
    refined = FaissKMeans(40, n_init=2, seed=0, max_points_per_centroid=64, refine_passes=10).fit_rows(rows)
    full = FaissKMeans(40, n_init=2, seed=0).fit(vectors)
    objective = {name: lloyd_pass(rows, model.centroids)[1] for name, model in
                 (("unrefined", unrefined), ("refined", refined), ("full", full))}
    assert unrefined.refine_info == {"sample_rows": unrefined.refine_info["sample_rows"], "rows": 20000, "passes": 0}
    assert 2200 < unrefined.refine_info["sample_rows"] < 2900 and refined.refine_info["passes"] >= 2
    assert objective["refined"] < objective["unrefined"]
    assert objective["refined"] <= 1.01 * objective["full"], objective


def test_the_start_criterion_scores_its_own_clusters_in_their_umap_space():
    separated, _ = mixture(n_per=60, k=3, dim=16, spread=0.2)
    shuffled = np.random.default_rng(0).permuted(separated, axis=0)
    manifold = {"n_components": 2, "n_neighbors": 10, "metric": "euclidean", "clusterer": "gmm", "n_init": 2}
    good, clusters = manifold_separation(separated, 3, manifold=manifold)
    bad, _ = manifold_separation(shuffled, 3, manifold=manifold)
    assert good > 0.5 and good > bad + 0.2 and sorted(np.bincount(clusters)) == [60, 60, 60]
    # a start with UMAP restarts is scored on one map: the same score as without them
    assert manifold_separation(separated, 3, manifold={**manifold, "umap_restarts": 3})[0] == good
