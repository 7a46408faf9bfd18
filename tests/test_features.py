import numpy as np
import pytest
import torch

from raycluster.data.transforms import normalize
from raycluster.features.pixels import PixelsExtractor
from raycluster.features.timm_model import CheckpointError, TimmExtractor, create_timm_model

TINY = dict(model_name="vit_tiny_patch16_224", img_size=32)


def _batch(n, spec, ok=None):
    rng = np.random.default_rng(0)
    return {"key": np.array([f"k{i}" for i in range(n)], dtype=object), "shard": np.array(["s.tar"] * n, dtype=object),
            "label": np.zeros(n, np.int64), "ok": np.ones(n, bool) if ok is None else np.array(ok),
            "pixels": rng.integers(0, 255, (n, spec.channels, spec.size, spec.size), dtype=np.uint8)}


def test_timm_extractor_shapes_dtypes_and_corrupt_rows():
    extractor = TimmExtractor(**TINY, device="cpu")
    assert extractor.spec.size == 32 and extractor.spec.mean == (0.5, 0.5, 0.5)  # timm's data config
    out = extractor(_batch(4, extractor.spec, ok=[True, False, True, True]))
    assert "pixels" not in out
    assert out["embedding"].shape == (4, 192) and out["embedding"].dtype == np.float32
    assert np.all(out["embedding"][1] == 0) and np.abs(out["embedding"][0]).sum() > 0


def test_forward_passes_in_pieces_give_the_batch_embeddings():
    torch.manual_seed(0)
    whole = TimmExtractor(**TINY, device="cpu")
    pieces = TimmExtractor(**TINY, device="cpu", forward_rows=3)
    pieces.model.load_state_dict(whole.model.state_dict())
    ok = [True, True, False, True, True, True, True]
    expected = whole(_batch(7, whole.spec, ok=ok))["embedding"]
    assert np.allclose(pieces(_batch(7, whole.spec, ok=ok))["embedding"], expected, atol=1e-5)


def test_cpu_forward_rows_and_decode_threads_are_checked():
    from raycluster.config import ExtractConfig

    with pytest.raises(ValueError, match="cpu_forward_rows must be >= 1"):
        ExtractConfig(cpu_forward_rows=0)
    with pytest.raises(ValueError, match="decode_threads must be >= 0"):
        ExtractConfig(decode_threads=-1)


def test_timm_extractor_random_init_is_announced():
    assert "NOT meaningful" in TimmExtractor.weights_note(**TINY)
    assert "checkpoint" in TimmExtractor.weights_note(**TINY, checkpoint="/w.pth")


def test_local_checkpoint_is_loaded(tmp_path):
    torch.manual_seed(1)
    reference = create_timm_model(**TINY).eval()
    path = tmp_path / "vit_tiny.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)  # DDP-style
    extractor = TimmExtractor(**TINY, checkpoint=str(path), device="cpu")
    batch = _batch(2, extractor.spec)
    expected = reference(normalize(torch.from_numpy(batch["pixels"]), extractor.spec)).detach().numpy()
    np.testing.assert_allclose(extractor(batch)["embedding"], expected, rtol=1e-4, atol=1e-5)


def test_mismatched_checkpoint_is_one_clear_error(tmp_path):
    other = create_timm_model("vit_small_patch16_224", img_size=32)
    path = tmp_path / "vit_small.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit"):
        TimmExtractor(**TINY, checkpoint=str(path), device="cpu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TimmExtractor(**TINY, checkpoint=str(tmp_path / "missing.pth"), device="cpu")


def test_unknown_timm_model_name():
    with pytest.raises(ValueError, match="no model named"):
        TimmExtractor.image_spec(model_name="vit_nonexistent_9000")


def test_pixels_extractor_flattens_to_unit_range():
    extractor = PixelsExtractor(size=None, channels=1, device="cpu")
    batch = {"key": np.array(["a"], dtype=object), "shard": np.array(["s"], dtype=object), "label": np.zeros(1, np.int64),
             "ok": np.ones(1, bool), "pixels": np.full((1, 1, 8, 8), 255, np.uint8)}
    out = extractor(batch)
    assert out["embedding"].shape == (1, 64)
    assert out["embedding"].max() == pytest.approx(1.0)
