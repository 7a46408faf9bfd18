"""raycluster.methods.base: the one strict way a method is built from its config."""
import pytest

from raycluster.errors import ConfigError
from raycluster.methods.base import ClusteringMethod, TorchMethod
from raycluster.methods.cludi.method import CLUDI
from raycluster.methods.kmeans.method import FaissKMeans

KMEANS = "raycluster.methods.kmeans.method.FaissKMeans"


def test_from_config_builds_the_class_it_names_with_its_settings():
    method = ClusteringMethod.from_config({"_target_": KMEANS, "n_clusters": 4, "n_init": 2}, reuse="strict")
    assert isinstance(method, FaissKMeans) and method.n_init == 2 and method.reuse == "strict"


@pytest.mark.parametrize("settings, message", [
    ({"n_clusters": 4}, "no _target_"),
    ({"_target_": "os.system", "n_clusters": 4}, "is not in raycluster.methods"),
    ({"_target_": "raycluster.methods.base.np", "n_clusters": 4}, "is not a raycluster clustering method"),
    ({"_target_": KMEANS, "n_clusters": 4, "n_iinit": 2}, "unexpected keyword argument 'n_iinit'"),
    ({"_target_": KMEANS, "n_clusters": 1}, "n_clusters must be >= 2"),
    ({"_target_": "raycluster.methods.cludi.method.CLUDI", "n_clusters": 4, "model": {"emb_dim": 8}}, "emb_dim"),
    ({"_target_": "raycluster.methods.cludi.method.CLUDI", "n_clusters": 4,
      "model": {"_target_": "os.system"}}, "name a class to build"),
])
def test_from_config_refuses_what_it_cannot_build_with_one_line(settings, message):
    with pytest.raises(ConfigError, match=message) as error:
        ClusteringMethod.from_config(settings)
    assert "\n" not in str(error.value)


def test_torch_methods_share_their_constructor_settings():
    method = CLUDI(5, optim={"epochs": 3, "lr": 0.01}, train={"num_workers": 1}, use_gpu=False, seed=7, max_failures=2)
    assert isinstance(method, TorchMethod)
    assert (method.optim.epochs, method.optim.lr, method.train.num_workers) == (3, 0.01, 1)
    assert (method.seed, method.max_failures, method.model, method.stages) == (7, 2, None, {})
    with pytest.raises(TypeError):   # an OptimConfig key that does not exist
        CLUDI(5, optim={"epoch": 3})


def test_default_fit_rows_trains_on_a_sample_of_train_rows_and_on_every_row_below_it():
    """TEMI, DiEC and DiFiC train through the default fit_rows: past method.train_rows the fit
    task holds a keyed sample, never every row."""
    import numpy as np

    from raycluster.data.rows import ArrayRows
    from raycluster.methods.base import ClusteringMethod

    class Recorder(ClusteringMethod):
        def fit(self, vectors, labels=None):
            self.seen = len(vectors)
            return self

    rows = ArrayRows(np.random.default_rng(0).normal(size=(2000, 4)))
    method = Recorder(2)
    assert method.fit_rows(rows).seen == 2000
    method.train_rows = 500
    assert 400 <= method.fit_rows(rows).seen <= 600
    temi = ClusteringMethod.from_config({"_target_": "raycluster.methods.temi.method.TEMI", "n_clusters": 3,
                                         "train_rows": 500})
    assert temi.train_rows == 500
