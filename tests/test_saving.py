"""raycluster.methods.saving: fitted methods on disk without pickle; a crafted file runs no code."""
import json
import os
import pickle

import numpy as np
import pytest

from conftest import SHARED_DATA

from raycluster.methods.hkmeans.method import HierarchicalKMeans
from raycluster.methods.kmeans.method import FaissKMeans
from raycluster.methods.kmeans.umap import UMAPKMeans
from raycluster.methods.saving import NotAFittedMethodError, load_fitted, save_fitted


def _blobs(n=600, d=8, k=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (k, d))
    return (centres[np.arange(n) % k] + rng.normal(0, 0.5, (n, d))).astype(np.float32)


@pytest.mark.parametrize("method, settings", [
    (FaissKMeans(4, n_init=2), {"_target_": "raycluster.methods.kmeans.method.FaissKMeans", "n_clusters": 4, "n_init": 2}),
    (HierarchicalKMeans([8, 4, 2]), {"_target_": "raycluster.methods.hkmeans.method.HierarchicalKMeans", "levels": [8, 4, 2]}),
    (UMAPKMeans(4, n_init=1), {"_target_": "raycluster.methods.kmeans.umap.UMAPKMeans", "n_clusters": 4, "n_init": 1}),
    (UMAPKMeans(4, n_init=1, clusterer="gmm"),
     {"_target_": "raycluster.methods.kmeans.umap.UMAPKMeans", "n_clusters": 4, "n_init": 1, "clusterer": "gmm"}),
])
def test_saved_method_predicts_the_same(tmp_path, method, settings):
    vectors = _blobs()
    method.fit(vectors)
    path = str(tmp_path / "method.safetensors")
    save_fitted(method, path, settings)
    again = load_fitted(path)
    assert type(again) is type(method)
    for mine, theirs in zip(method.predict(vectors), again.predict(vectors)):
        np.testing.assert_array_equal(mine, theirs)


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PWNED_PATH']}",))


def test_a_pickle_is_refused_before_it_runs(tmp_path, monkeypatch):
    """Case 4 of the trust issue: predict unpickled method.pkl, so a crafted run folder ran code."""
    marker = tmp_path / "pwned"
    monkeypatch.setenv("PWNED_PATH", str(marker))
    path = tmp_path / "method.safetensors"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(NotAFittedMethodError, match="pickle"):
        load_fitted(str(path))
    assert not marker.exists()


def test_a_safetensors_file_naming_another_class_is_refused(tmp_path):
    from safetensors.numpy import save

    for target in ("os.system", "subprocess.Popen", "raycluster.methods.saving.load_fitted", "raycluster.io.url_exists"):
        metadata = {"format": "raycluster-method/1", "settings": json.dumps({"_target_": target, "n_clusters": 2}),
                    "values": "{}"}
        path = tmp_path / "method.safetensors"
        path.write_bytes(save({"centroids": np.zeros((2, 2), np.float32)}, metadata=metadata))
        with pytest.raises(NotAFittedMethodError):
            load_fitted(str(path))
    path.write_bytes(b"not a method at all")
    with pytest.raises(NotAFittedMethodError):
        load_fitted(str(path))


def test_umap_kmeans_votes_as_well_as_umap_transform_on_held_out_rows():
    """UMAPKMeans predicts new rows by a k-NN vote over its fitted rows (savable as arrays) instead
    of UMAP's transform (a pickled object): on held-out ImageNet-50 DINO rows it must not lose."""
    import torch
    import umap

    from raycluster.metrics import supervised_metrics

    root = SHARED_DATA / "imagenet50-dino-vits16"
    if not root.exists():
        pytest.skip(f"{root} not present")
    vectors = torch.load(root / "features_val.pth").float().numpy()
    labels = torch.load(root / "labels_val.pth").numpy()
    order = np.random.default_rng(0).permutation(len(vectors))
    fit, held = order[:1500], order[1500:]
    method = UMAPKMeans(50, seed=0).fit(vectors[fit])
    reducer = umap.UMAP(n_neighbors=15, n_components=10, min_dist=0.0, metric="cosine", random_state=0, n_jobs=1)
    reducer.fit(vectors[fit])
    transformed, _ = method.kmeans.predict(np.ascontiguousarray(reducer.transform(vectors[held]), np.float32))
    voted, _ = method.predict(vectors[held])
    assert supervised_metrics(labels[held], voted)["acc"] >= supervised_metrics(labels[held], transformed)["acc"] - 0.01
