"""raycluster.fingerprint: a cached artifact is reused only when what made it is unchanged."""
import os

import numpy as np
import pytest

from raycluster.data.builtin import encode_png
from raycluster.fingerprint import (StaleArtifactError, changed_inputs, listing_hash, reusable, write_fingerprint)
from raycluster.app.pipeline import ensure_shards


def _image_folder(root, classes=("a", "b"), per_class=3):
    for name in classes:
        os.makedirs(root / name, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(encode_png(np.full((4, 4), i, np.uint8)))
    return root


def test_reusable_compares_inputs_and_clears_only_what_it_owns(tmp_path):
    folder = tmp_path / "artifact"
    assert not reusable(str(folder), {"a": 1}, "thing")          # nothing there yet
    folder.mkdir()
    (folder / "x.tar").write_text("x")
    (folder / "keep.txt").write_text("user file")
    write_fingerprint(str(folder), {"a": 1})
    assert reusable(str(folder), {"a": 1}, "thing")
    with pytest.raises(StaleArtifactError, match=r"changed: a\b"):
        reusable(str(folder), {"a": 2}, "thing", "strict")
    assert (folder / "x.tar").exists()                            # strict removes nothing
    assert not reusable(str(folder), {"a": 2}, "thing", owned=("*.tar",))
    assert sorted(os.listdir(folder)) == ["keep.txt"]
    assert changed_inputs({"s": {"limit": 1, "kind": "d"}}, {"s": {"limit": 2, "kind": "d"}}) == ["s.limit"]


def test_listing_hash_sees_added_touched_and_nested_files(tmp_path):
    root = _image_folder(tmp_path / "photos")
    first = listing_hash(str(root))
    assert listing_hash(str(root)) == first
    (root / "a" / "deeper").mkdir()
    (root / "a" / "deeper" / "new.png").write_bytes(b"x")
    second = listing_hash(str(root))
    assert second != first
    os.utime(root / "a" / "0.png", ns=(1, 1))
    assert listing_hash(str(root)) != second


def test_shards_follow_their_source(tmp_path, compose_config):
    """Case 1 of the trust issue: before, shards were keyed by data.name alone."""
    cfg = compose_config(["data.source.limit=300"])
    assert ensure_shards(cfg.data)["samples"] == 300
    cfg = compose_config([])
    assert ensure_shards(cfg.data) == {"shards": 6, "samples": 1797, "built": True, "skipped": {}}
    assert ensure_shards(cfg.data)["built"] is False                      # unchanged: reused

    one, two = _image_folder(tmp_path / "one"), _image_folder(tmp_path / "two", ("c", "d", "e"))
    folder = ["data=folder", "data.num_clusters=2"]
    assert ensure_shards(compose_config(folder + [f"data.source.path={one}"]).data)["samples"] == 6
    assert ensure_shards(compose_config(folder + [f"data.source.path={two}"]).data)["samples"] == 9   # same data.name
    _image_folder(tmp_path / "two", ("f",), per_class=2)                                           # images added
    assert ensure_shards(compose_config(folder + [f"data.source.path={two}"]).data)["samples"] == 11
    with pytest.raises(StaleArtifactError, match="source.path"):
        ensure_shards(compose_config(folder + [f"data.source.path={one}"]).data, reuse="strict")


def test_method_stage_is_redone_when_its_inputs_change(tmp_path, monkeypatch):
    """Case 2 (method stages): DiEC's search result was reused whenever search.json existed."""
    import raycluster.tune.layer_timestep as layer_timestep
    from raycluster.methods.diec.method import DiEC

    calls = []

    class Found:
        layer, timestep, best_by_acc, heatmaps = "mid", 100, None, {}

    def fake_search(*args, **kwargs):
        calls.append(kwargs["subset"])
        os.makedirs(args[6], exist_ok=True)
        (tmp_path / "diec" / "search" / "search.json").write_text(
            '{"layer": "mid", "timestep": 100, "best_by_acc": null, "heatmaps": {}}')
        return Found()

    monkeypatch.setattr(layer_timestep, "search_layer_timestep", fake_search)
    pixels = np.random.default_rng(0).random((20, 16), dtype=np.float32)
    method = DiEC(2, image_shape=(1, 4, 4), work_dir=str(tmp_path / "diec"), search={"subset": 10})
    assert method.layer_and_timestep(pixels, "unet-name") == ("mid", 100)
    assert method.layer_and_timestep(pixels, "unet-name") == ("mid", 100)
    assert calls == [10]                                                   # same inputs: reused
    method.layer_and_timestep(pixels[::-1].copy(), "unet-name")            # other rows
    method.search["subset"] = 12                                           # other settings
    method.layer_and_timestep(pixels, "unet-name")
    assert calls == [10, 10, 12]
