"""raycluster.data.postprocess: PCA fitted on a sample, applied batch by batch, saved without pickle."""
import numpy as np
import pytest

from raycluster.data.postprocess import Postprocess


def test_pca_and_l2_match_a_whole_matrix_pca_and_apply_in_any_batches():
    from sklearn.decomposition import PCA

    vectors = np.random.default_rng(0).normal(size=(300, 10)).astype(np.float32)
    post = Postprocess.fit(vectors, pca_dim=4, l2_normalize=True)
    whole = post(vectors)
    assert whole.shape == (300, 4) and post.out_dim == 4
    assert np.allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.concatenate([post(vectors[:100]), post(vectors[100:])]), whole, atol=1e-6)
    reference = PCA(4, random_state=0).fit_transform(vectors)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert np.allclose(np.abs(whole), np.abs(reference), atol=1e-4)   # PCA axes are defined up to sign
    with pytest.raises(ValueError, match="pca_dim=20"):
        Postprocess.fit(vectors, pca_dim=20, l2_normalize=False)


def test_save_and_load_round_trip_without_pickle(tmp_path):
    vectors = np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32)
    for post in (Postprocess.fit(vectors, 3, False), Postprocess(l2_normalize=True), Postprocess()):
        path = str(tmp_path / "post.npz")
        post.save(path)
        again = Postprocess.load(path)
        assert np.array_equal(again(vectors), post(vectors)) and again.l2_normalize == post.l2_normalize
    np.savez(str(tmp_path / "bad.npz"), l2_normalize=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        Postprocess.load(str(tmp_path / "bad.npz"))


def test_whitened_components_have_unit_variance_like_sklearn_whiten():
    from sklearn.decomposition import PCA

    from raycluster.config import BackboneConfig

    vectors = (np.random.default_rng(2).normal(size=(500, 8)) * np.arange(1, 9)).astype(np.float32)
    post = Postprocess.fit(vectors, pca_dim=5, l2_normalize=False, whiten=True)
    projected = post(vectors)
    assert np.allclose(projected.std(axis=0, ddof=1), 1.0, atol=1e-3)
    assert np.allclose(np.abs(projected), np.abs(PCA(5, whiten=True, random_state=0).fit_transform(vectors)), atol=1e-3)
    with pytest.raises(ValueError, match="whiten needs backbone.pca_dim"):
        BackboneConfig(whiten=True)
