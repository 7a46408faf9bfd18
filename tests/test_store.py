import numpy as np
import pyarrow.parquet as pq
import pytest

from raycluster.data.store import EmbeddingStore, EmbeddingWidthError, part_name, write_assignments


def test_write_and_load_parts_sorted_by_key(tmp_path):
    store = EmbeddingStore(str(tmp_path / "store"))
    store.write_part("/x/shard-000001.tar", ["b", "d"], [1, 3], np.ones((2, 4)), corrupt=1)
    store.write_part("/x/shard-000000.tar", ["a", "c"], [0, 2], np.zeros((2, 4)), dtype="float16")
    loaded = store.load(expected_dim=4)
    assert loaded.keys.tolist() == ["a", "b", "c", "d"]
    assert loaded.labels.tolist() == [0, 1, 2, 3] and loaded.has_labels
    assert loaded.vectors.dtype == np.float32 and loaded.vectors[1].tolist() == [1, 1, 1, 1]
    assert store.done_shards() == {part_name("/x/shard-000000.tar"): None, part_name("/x/shard-000001.tar"): None}
    meta = {m["shard"]: m for m in store.part_metadata()}
    assert meta["/x/shard-000001.tar"]["corrupt"] == 1 and meta["/x/shard-000001.tar"]["samples"] == 3


def test_width_mismatch_and_empty_store_are_clear_errors(tmp_path):
    store = EmbeddingStore(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no part files"):
        store.load()
    store.write_part("s.tar", ["a"], [0], np.zeros((1, 384)))
    with pytest.raises(EmbeddingWidthError, match="width 384, expected 768"):
        store.load(expected_dim=768)


def test_assignments_file_columns(tmp_path):
    path = tmp_path / "out" / "assignments.parquet"
    write_assignments(str(path), ["a", "b"], np.array([1, 0]), np.array([0.9, 0.5]))
    table = pq.read_table(path)
    assert table.column_names == ["key", "cluster", "confidence"]
    assert table.column("cluster").to_pylist() == [1, 0]
