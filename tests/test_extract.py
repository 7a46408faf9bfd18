import pytest

from raycluster.data.builtin import Sample, digits_samples
from raycluster.data.shards import ShardNotFoundError, write_shards
from raycluster.data.store import EmbeddingStore
from raycluster.features.extract import run_extraction
from raycluster.ray_utils import actor_cpus


def test_actor_cpus_leaves_a_cpu_for_reads():
    assert actor_cpus(2, 1) == 1.0
    assert actor_cpus(2, 2) == 0.5            # the case that deadlocked with 1 CPU each
    assert actor_cpus(16, 8, use_gpu=True) == 1.0
    with pytest.raises(ValueError, match="do not fit"):
        actor_cpus(2, 2, requested=1.0)
    with pytest.raises(ValueError, match="do not fit"):
        actor_cpus(1, 1)
    # configs/cluster/multi_node.yaml on a cluster whose GPU workers the autoscaler has not added yet
    assert actor_cpus(0, 32, requested=10, use_gpu=True, must_fit_now=False) == 10


def _digit_shards(path, limit=200, corrupt_keys=()):
    def samples():
        for sample in digits_samples(limit):
            if sample.key in corrupt_keys:
                sample = Sample(sample.key, b"\x89PNG garbage", "png", sample.label, sample.meta)
            yield sample
    write_shards(samples(), str(path), samples_per_shard=50)


@pytest.mark.timeout(300)
def test_extraction_counts_corrupt_samples_and_resumes(tmp_path, ray_local, compose_config):
    shards = tmp_path / "shards"
    _digit_shards(shards, corrupt_keys={"digits_000007", "digits_000120"})
    cfg = compose_config([f"data.shards={shards}", "data.source=null"])
    store_dir = str(tmp_path / "store")

    first = run_extraction(cfg.data, cfg.backbone, cfg.cluster, store_dir)
    assert (first.shards_written, first.samples, first.corrupt) == (4, 198, 2)
    assert sorted(first.corrupt_by_shard.values()) == [1, 1]
    loaded = EmbeddingStore(store_dir).load(expected_dim=64)
    assert len(loaded.keys) == 198 and "digits_000007" not in set(loaded.keys)

    again = run_extraction(cfg.data, cfg.backbone, cfg.cluster, store_dir)
    assert (again.shards_skipped, again.shards_written) == (4, 0)

    part = sorted((tmp_path / "store").glob("part-*.parquet"))[2]
    part.unlink()  # as if the job died before this shard was written
    resumed = run_extraction(cfg.data, cfg.backbone, cfg.cluster, store_dir)
    assert (resumed.shards_skipped, resumed.shards_written, resumed.samples, resumed.corrupt) == (3, 1, 49, 1)
    assert len(EmbeddingStore(store_dir).load().keys) == 198


@pytest.mark.timeout(300)
def test_two_actors_on_two_cpus_do_not_starve_reads(tmp_path, ray_local, compose_config):
    """Ray 2.60 hung here when each of two actors took a whole CPU (see NOTES-ray)."""
    shards = tmp_path / "shards"
    _digit_shards(shards, limit=600)
    cfg = compose_config([f"data.shards={shards}", "data.source=null", "cluster.extract.concurrency=2",
                          "cluster.extract.batch_size=32"])
    summary = run_extraction(cfg.data, cfg.backbone, cfg.cluster, str(tmp_path / "store"))
    assert summary.samples == 600


def test_missing_shard_is_named(tmp_path, ray_local, compose_config):
    _digit_shards(tmp_path / "shards", limit=100)
    cfg = compose_config([f"data.shards='{tmp_path}/shards/shard-{{000000..000005}}.tar'", "data.source=null"])
    with pytest.raises(ShardNotFoundError, match="4 shard\\(s\\) not found: .*shard-000002.tar"):
        run_extraction(cfg.data, cfg.backbone, cfg.cluster, str(tmp_path / "store"))


@pytest.mark.timeout(300)
def test_store_is_rebuilt_for_another_extractor_and_parts_for_changed_shards(tmp_path, ray_local, compose_config):
    """Case 2 of the trust issue: `backbone.extractor.size=8` after a default run reused the 64-d store."""
    from raycluster.fingerprint import StaleArtifactError

    shards = tmp_path / "shards"
    _digit_shards(shards, limit=100)
    store_dir = str(tmp_path / "store")
    cfg = compose_config([f"data.shards={shards}", "data.source=null"])
    run_extraction(cfg.data, cfg.backbone, cfg.cluster, store_dir)
    assert EmbeddingStore(store_dir).load().vectors.shape == (100, 64)

    small = compose_config([f"data.shards={shards}", "data.source=null", "backbone.extractor.size=4"])
    with pytest.raises(StaleArtifactError, match="backbone|extractor"):
        run_extraction(small.data, small.backbone, small.cluster, store_dir, reuse="strict")
    rebuilt = run_extraction(small.data, small.backbone, small.cluster, store_dir)
    assert (rebuilt.shards_skipped, rebuilt.shards_written) == (0, 2)
    assert EmbeddingStore(store_dir).load().vectors.shape == (100, 16)

    # one shard rewritten with other images (same name): only its part is redone
    write_shards(digits_samples(150), str(shards), samples_per_shard=50)   # now 3 shards; the first two rewritten
    (shards / "shard-000000.tar").touch()
    redone = run_extraction(small.data, small.backbone, small.cluster, store_dir)
    assert redone.shards_written == 3 and redone.shards_skipped == 0
    again = run_extraction(small.data, small.backbone, small.cluster, store_dir)
    assert (again.shards_skipped, again.shards_written) == (3, 0)
    assert len(EmbeddingStore(store_dir).load().keys) == 150
    (shards / "shard-000002.tar").unlink()                                  # a shard gone: its part goes too
    run_extraction(small.data, small.backbone, small.cluster, store_dir)
    assert len(EmbeddingStore(store_dir).load().keys) == 100


@pytest.mark.timeout(300)
def test_decode_threads_give_the_same_embeddings_as_decoding_in_the_actors_thread(tmp_path, ray_local, compose_config):
    """A GPU actor decodes on threads ahead of its model (decode_threads = its CPUs): same rows, same order."""
    import numpy as np

    _digit_shards(tmp_path / "shards", limit=120, corrupt_keys={"digits_000003"})
    stores = {}
    for threads in (0, 2):
        cfg = compose_config([f"data.shards={tmp_path / 'shards'}", "data.source=null",
                              f"cluster.extract.decode_threads={threads}", "cluster.extract.batch_size=16"])
        summary = run_extraction(cfg.data, cfg.backbone, cfg.cluster, str(tmp_path / f"store-{threads}"))
        assert (summary.samples, summary.corrupt) == (119, 1)
        stores[threads] = EmbeddingStore(str(tmp_path / f"store-{threads}")).load()
    assert list(stores[0].keys) == list(stores[2].keys)
    np.testing.assert_array_equal(stores[0].vectors, stores[2].vectors)
