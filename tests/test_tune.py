"""raycluster.tune: the label-free criteria and both Ray Tune searches (DiEC grid, CLUDI ASHA)."""
import json

import numpy as np
import pytest

from raycluster.tune.asha import agreement
from raycluster.tune.layer_timestep import choose_cell, clusterability, criterion_noise, plot_heatmaps

from tests.test_cludi import mixture


def test_both_criteria_prefer_separated_clusters():
    separated, _ = mixture(n_per=50, k=3, dim=16, spread=0.2)
    rng = np.random.default_rng(0)
    shuffled = rng.permuted(separated, axis=0)   # same values, structure destroyed per column
    good, clusters = clusterability(separated, 3)
    bad, _ = clusterability(shuffled, 3)
    assert good["chi"] > 10 * bad["chi"] and len(np.unique(clusters)) == 3
    assert good["silhouette"] > 0.5 > 0.1 > bad["silhouette"]


def test_unknown_criterion_is_one_clear_error():
    from raycluster.methods.diec.method import DiEC

    with pytest.raises(ValueError, match="unknown search criterion 'silhouete'"):
        DiEC(10, search={"criterion": "silhouete"})
    with pytest.raises(ValueError, match=r"unknown search setting\(s\) \['timestep'\]"):
        DiEC(10, search={"timestep": [0]})
    with pytest.raises(ValueError, match="manifold_silhouette scores the start's UMAP clusters: set method.manifold"):
        DiEC(10, search={"criterion": "manifold_silhouette"}, manifold=None)
    with pytest.raises(ValueError, match="tie_tolerance=null measures the criterion's noise"):
        DiEC(10, search={"tie_tolerance": None, "noise_seeds": 0})


def test_near_ties_go_to_the_smaller_timestep():
    rows = [{"layer": "up_0", "timestep": 200, "silhouette": 0.2097}, {"layer": "up_0", "timestep": 100, "silhouette": 0.2063},
            {"layer": "mid", "timestep": 50, "silhouette": 0.1877}]
    assert choose_cell(rows, "silhouette")["timestep"] == 200                       # plain arg-max
    assert choose_cell(rows, "silhouette", 0.02)["timestep"] == 100                 # within 2%: smaller t
    assert choose_cell(rows, "silhouette", 0.2)["layer"] == "mid"                   # a wide band reaches t=50
    negative = [{"layer": "a", "timestep": 9, "chi": -1.0}, {"layer": "b", "timestep": 1, "chi": -1.01}]
    assert choose_cell(negative, "chi", 0.02)["timestep"] == 1                      # relative to |best|


def test_criterion_noise_pools_each_cells_spread_across_seeds():
    assert criterion_noise([[0.70, 0.70, 0.70]]) == pytest.approx(0.0, abs=1e-12)
    assert criterion_noise([[1.0, 3.0], [2.0, 2.0]]) == pytest.approx(1.0)            # variances 2 and 0, pooled
    assert criterion_noise([[0.5, 0.6, 0.7], [0.1, 0.1, 0.1]]) == pytest.approx((0.01 / 2) ** 0.5)


def test_heatmaps_box_the_label_free_choice(tmp_path):
    rows = [{"layer": layer, "timestep": t, "chi": chi, "silhouette": chi / 10, "acc": acc}
            for (layer, t, chi, acc) in [("mid", 0, 5.0, 0.5), ("mid", 100, 9.0, 0.7),
                                         ("up_0", 0, 3.0, 0.6), ("up_0", 100, 4.0, 0.4)]]
    paths = plot_heatmaps(rows, ["mid", "up_0"], [0, 100], str(tmp_path), "chi")
    assert [p.rsplit("/", 1)[1] for p in paths] == ["heatmap_chi.png", "heatmap_acc.png"]
    paths = plot_heatmaps(rows, ["mid", "up_0"], [0, 100], str(tmp_path / "s"))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["heatmap_silhouette.png", "heatmap_acc.png"]
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in paths)
    unlabeled = [{**r, "acc": float("nan")} for r in rows]
    assert len(plot_heatmaps(unlabeled, ["mid", "up_0"], [0, 100], str(tmp_path / "u"))) == 1


def test_agreement_ranks_the_label_free_choice_by_acc():
    trials = [{"silhouette": 0.5, "acc": 0.7, "epoch": 10}, {"silhouette": 0.4, "acc": 0.8, "epoch": 10},
              {"silhouette": 0.1, "acc": 0.2, "epoch": 3}, {"silhouette": 0.9, "acc": float("nan"), "epoch": 10}]
    result = agreement(trials)   # the unlabelled trial cannot be ranked
    assert result["trials"] == 3 and result["chosen_acc"] == 0.7 and result["best_acc"] == 0.8
    assert result["chosen_rank_by_acc"] == 2 and 0 < result["spearman_silhouette_acc"] <= 1
    assert agreement(trials[:1]) is None
    tied = [{**t, "acc": 0.5} for t in trials[:3]]   # constant ACC: rank correlation undefined
    assert agreement(tied)["spearman_silhouette_acc"] is None


@pytest.mark.slow
def test_asha_search_of_cludi_reports_every_trial(ray_local, tmp_path):
    from raycluster.tune.asha import asha_search

    features, labels = mixture(n_per=40, k=3)
    model = {"n_clusters": 3, "feature_dim": 128, "embedding_dim": 8, "depth": 1, "teacher_draws": 2,
             "teacher_steps": 2, "eval_draws": 2, "eval_steps": 2}
    optim = {"epochs": 4, "batch_size": 60, "lr": 1e-3, "warmup_epochs": 0}
    report = asha_search(features, "raycluster.methods.cludi.model.build_cludi", model, optim,
                         {"ce_weight": [10.0, 50.0], "rescaling_factor": [9.0, 49.0]}, str(tmp_path), labels,
                         num_samples=4, grace_period=1, max_concurrent=2, seed=0)
    assert len(report["trials"]) == 4
    assert all(-1 <= t["silhouette"] <= 1 and 1 <= t["epoch"] <= 4 for t in report["trials"])
    assert report["best"]["silhouette"] == max(t["silhouette"] for t in report["trials"])
    saved = json.load(open(tmp_path / "search.json"))
    assert saved["criterion"] == "silhouette" and len(saved["trials"]) == 4


def test_tune_job_rejects_an_unknown_hyperparameter(compose_config):
    from raycluster.app.tune import run_tune

    cfg = compose_config(["method=cludi", "+tune.space.rescaling_facter=[1,2]"])
    with pytest.raises(ValueError, match=r"\['rescaling_facter'\].*not cludi model hyperparameters"):
        run_tune(cfg)
