import json
import os

import pyarrow.parquet as pq
import pytest

from raycluster.data.builtin import samples_from_source
from raycluster.data.shards import write_shards
from raycluster.app.pipeline import ensure_shards, run_train

from tests.conftest import REPO


@pytest.mark.timeout(300)
def test_train_on_digits_end_to_end_and_rerun_reuses_everything(ray_local, compose_config, tmp_path):
    cfg = compose_config()          # the embedded default: digits -> pixels -> k-means
    summary = run_train(cfg)
    assert summary["samples"] == 1797 and summary["k"] == 10
    assert summary["metrics"]["acc"] >= 0.70, summary["metrics"]
    assert summary["shards_built"] and summary["shards_embedded_now"] == summary["shards"]
    table = pq.read_table(summary["outputs"]["assignments"])
    assert table.num_rows == 1797 and set(table.column("cluster").to_pylist()) <= set(range(10))
    assert json.load(open(summary["outputs"]["summary"]))["metrics"]["acc"] == summary["metrics"]["acc"]

    again = run_train(cfg)
    assert not again["shards_built"] and again["shards_embedded_now"] == 0
    assert again["shards_reused"] == summary["shards"]


def test_k_larger_than_n_is_a_clear_error(ray_local, compose_config, tmp_path):
    cfg = compose_config(["data.source.limit=40", "data.num_clusters=50"])
    with pytest.raises(ValueError, match="k=50 clusters is more than the 40 samples"):
        run_train(cfg)


def test_an_interrupted_shard_build_is_built_again_not_read_as_a_smaller_dataset(compose_config):
    cfg = compose_config(["data.source.limit=300", "data.samples_per_shard=100"])

    def killed_after(count):   # the source stops mid-way, as a killed job would
        for index, sample in enumerate(samples_from_source("digits", None, None, None)):
            if index == count:
                raise KeyboardInterrupt
            yield sample

    with pytest.raises(KeyboardInterrupt):
        write_shards(killed_after(150), cfg.data.shards, 100)
    assert sorted(os.listdir(cfg.data.shards)) == ["build-in-progress.json", "shard-000000.tar"]
    assert ensure_shards(cfg.data) == {"shards": 3, "samples": 300, "built": True, "skipped": {}}
    assert "build-in-progress.json" not in os.listdir(cfg.data.shards)
    assert ensure_shards(cfg.data)["built"] is False   # complete now: reused


def test_shards_from_elsewhere_without_a_manifest_are_read_as_they_are(compose_config):
    cfg = compose_config(["data.source=null", "data.samples_per_shard=100"])
    write_shards(samples_from_source("digits", None, None, 200), cfg.data.shards, 100)
    os.remove(os.path.join(cfg.data.shards, "manifest.json"))   # e.g. written by another tool
    assert ensure_shards(cfg.data) == {"shards": 2, "samples": None, "built": False, "skipped": {}}


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml")))
def test_every_experiment_config_composes_and_builds_its_method(experiment, compose_config):
    """A typo in an experiment file (a key the schema or the method does not know) fails here."""
    from raycluster.methods.base import ClusteringMethod

    cfg = compose_config([f"experiment={experiment}"])
    method = ClusteringMethod.from_config(cfg.method)
    assert method.n_clusters == cfg.data.num_clusters


@pytest.mark.parametrize("method_name", sorted(p.stem for p in (REPO / "configs" / "method").glob("*.yaml")))
def test_every_method_config_composes_and_builds(method_name, compose_config):
    from raycluster.methods.base import ClusteringMethod

    method = ClusteringMethod.from_config(compose_config([f"method={method_name}"]).method)
    assert method.n_clusters == 10     # the embedded default's digits


def test_a_collapsed_clustering_is_said_loudly():
    from raycluster.app.pipeline import collapse_warnings, format_summary

    assert collapse_warnings({"size_entropy": 0.93, "clusters_used": 10}, 10) == []
    warnings = collapse_warnings({"size_entropy": 0.0, "clusters_used": 1}, 20)
    assert warnings[0].startswith("collapsed: size entropy 0.000") and warnings[1] == "19 of 20 clusters are empty"
    summary = {"data": "d", "backbone": "b", "method": "cludi", "k": 20, "weights": "w", "samples": 5, "dim": 2,
               "shards": 1, "shards_embedded_now": 1, "shards_reused": 0, "corrupt_skipped": 0, "extract_seconds": 1,
               "total_seconds": 2, "outputs": {},
               "metrics": {"size_entropy": 0.0, "clusters_used": 1, "mean_confidence": 0.95, "fit_seconds": 1.0,
                           "warnings": warnings}}
    assert "  WARNING collapsed: size entropy 0.000" in format_summary(summary)
    # sizes much less even than the method's own start: a partial collapse, said as such
    assert collapse_warnings({"size_entropy": 0.83, "clusters_used": 10}, 10, start_entropy=0.97) == [
        "partly collapsed: size entropy 0.830, its start had 0.970: training merged clusters the start kept apart"]
    assert collapse_warnings({"size_entropy": 0.95, "clusters_used": 10}, 10, start_entropy=0.97) == []
