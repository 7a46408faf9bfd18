"""raycluster.data.rows: bounded reads of a store, the same in-process and through Ray Data."""
import numpy as np
import pytest

from raycluster.data.rows import StoreRows, in_sample
from raycluster.data.store import EmbeddingStore, EmbeddingWidthError
from raycluster.data.postprocess import Postprocess


def make_store(root, parts=4, rows=250, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    store = EmbeddingStore(str(root))
    for part in range(parts):
        keys = [f"k{part}_{i:04d}" for i in range(rows)]
        store.write_part(f"shard-{part:06d}.tar", keys, rng.integers(0, 5, rows), rng.normal(size=(rows, dim)),
                         from_shard=False)
    return store


def test_in_sample_is_a_deterministic_fraction_of_keys():
    keys = np.array([f"key{i}" for i in range(20000)], dtype=object)
    picked = in_sample(keys, 0.1, seed=3)
    assert 0.09 < picked.mean() < 0.11
    assert np.array_equal(picked, in_sample(keys[::-1], 0.1, seed=3)[::-1])   # order does not matter
    assert not np.array_equal(picked, in_sample(keys, 0.1, seed=4))
    assert in_sample(keys, 1.0).all()


def test_counts_sample_and_load_without_reading_everything_at_once(tmp_path):
    store = make_store(tmp_path / "store")
    rows = StoreRows(store, batch_rows=100)
    assert rows.n_rows == 1000 and rows.dim == 8 and rows.local
    everything = rows.load()
    reference = store.load()
    assert everything.keys.tolist() == reference.keys.tolist()
    assert np.array_equal(everything.vectors, reference.vectors)
    sample = rows.sample(200, seed=1)
    assert 150 < len(sample.keys) < 250 and list(sample.keys) == sorted(sample.keys)
    assert [int(k[1]) for k in sample.keys] == sample.parts.tolist()   # keys k<part>_<i> sit in part <part>
    assert set(sample.keys) == set(everything.keys[in_sample(everything.keys, 0.2, 1)])
    l2 = rows.with_postprocess(Postprocess(l2_normalize=True))
    assert np.allclose(np.linalg.norm(l2.sample(200, 1).vectors, axis=1), 1.0, atol=1e-5)
    assert rows.postprocess.l2_normalize is False   # with_postprocess returns a new view


def test_ray_data_path_reads_the_same_rows(tmp_path, ray_local):
    store = make_store(tmp_path / "store")
    local, remote = StoreRows(store, batch_rows=64), StoreRows(store, local_bytes=0, batch_rows=64)
    assert not remote.local
    a, b = local.sample(300, seed=2), remote.sample(300, seed=2)
    assert a.keys.tolist() == b.keys.tolist() and np.array_equal(a.vectors, b.vectors)
    assert np.array_equal(a.parts, b.parts)   # which part (shard) each row came from, both ways
    counts = sum(len(batch["key"]) for batch in remote.map(lambda keys, labels, vectors: {"key": keys}))
    assert counts == 1000


def test_parts_of_different_widths_are_one_clear_error(tmp_path):
    store = make_store(tmp_path / "store", parts=1)
    store.write_part("other.tar", ["x"], [0], np.zeros((1, 3)), from_shard=False)
    with pytest.raises(EmbeddingWidthError, match="disagree"):
        StoreRows(store)
    with pytest.raises(FileNotFoundError, match="no part files"):
        StoreRows(EmbeddingStore(str(tmp_path / "empty")))


def test_array_rows_read_like_a_store_and_are_identified_by_content():
    from raycluster.data.rows import ArrayRows

    vectors = np.random.default_rng(0).normal(size=(1000, 4)).astype(np.float32)
    rows = ArrayRows(vectors, np.arange(1000) % 3)
    sample = rows.sample(300, seed=2)
    assert rows.n_rows == 1000 and rows.dim == 4 and 250 < len(sample.keys) < 350
    assert np.array_equal(sample.vectors, vectors[sample.keys.astype(int)])     # keys are row positions
    assert np.array_equal(sample.labels, sample.keys.astype(int) % 3)
    assert list(rows.sample(300, seed=2).keys) == list(sample.keys)
    changed = vectors.copy()
    changed[5, 0] += 1
    assert ArrayRows(vectors).fingerprint() == rows.fingerprint() != ArrayRows(changed).fingerprint()


def test_store_rows_fingerprint_follows_the_parts_and_the_postprocess(tmp_path):
    store = make_store(tmp_path / "store")
    first = StoreRows(store).fingerprint()
    assert StoreRows(store).fingerprint() == first
    pca = Postprocess.fit(StoreRows(store).load().vectors, 4, False)
    assert StoreRows(store).with_postprocess(pca).fingerprint() != first
    store.write_part("shard-000001.tar", ["x"], [0], np.zeros((1, 8)), from_shard=False)
    assert StoreRows(store).fingerprint() != first
