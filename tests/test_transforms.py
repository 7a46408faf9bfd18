import io

import numpy as np
import pytest
import torch
from PIL import Image

from raycluster.data.builtin import encode_png
from raycluster.data.transforms import ImageSpec, decode_batch, decode_image, normalize


def _jpeg(width, height):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_decode_resizes_short_side_then_centre_crops():
    spec = ImageSpec(size=32, channels=3, crop_pct=0.875)
    assert decode_image(_jpeg(80, 50), spec).shape == (3, 32, 32)
    assert decode_image(_jpeg(20, 60), spec).dtype == np.uint8


def test_decode_matches_timm_eval_transform():
    import timm.data

    spec = ImageSpec(size=32, channels=3, interpolation="bicubic", crop_pct=0.875, mean=(0.5,) * 3, std=(0.5,) * 3)
    transform = timm.data.create_transform(input_size=(3, 32, 32), interpolation="bicubic", crop_pct=0.875,
                                           mean=(0.5,) * 3, std=(0.5,) * 3)
    data = _jpeg(64, 48)
    ours = normalize(torch.from_numpy(decode_image(data, spec))[None], spec)[0]
    theirs = transform(Image.open(io.BytesIO(data)).convert("RGB"))
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_decode_batch_flags_corrupt_samples_and_keeps_rows():
    spec = ImageSpec(size=None, channels=1)
    good = encode_png(np.full((8, 8), 255, np.uint8))
    batch = {"__key__": np.array(["a", "b", "c"]), "__url__": np.array(["s.tar"] * 3),
             "image": np.array([good, b"not an image", good[: len(good) // 2]], dtype=object),
             "cls": np.array([b"3", b"4", b"5"], dtype=object)}
    out = decode_batch(batch, spec)
    assert out["ok"].tolist() == [True, False, False]  # truncated PNG is corrupt too
    assert out["pixels"].shape == (3, 1, 8, 8) and out["pixels"][0].max() == 255
    assert out["label"].tolist() == [3, 4, 5]


def test_decode_batch_without_labels_gives_minus_one():
    spec = ImageSpec(size=None, channels=1)
    batch = {"__key__": np.array(["a"]), "__url__": np.array(["s.tar"]),
             "image": np.array([encode_png(np.zeros((4, 4), np.uint8))], dtype=object)}
    assert decode_batch(batch, spec)["label"].tolist() == [-1]


def test_mixed_sizes_without_resize_is_a_clear_error():
    spec = ImageSpec(size=None, channels=1)
    batch = {"__key__": np.array(["a", "b"]), "__url__": np.array(["s.tar"] * 2),
             "image": np.array([encode_png(np.zeros((4, 4), np.uint8)), encode_png(np.zeros((5, 5), np.uint8))],
                               dtype=object)}
    with pytest.raises(ValueError, match=r"images of different sizes \('b' decodes to \(1, 5, 5\).*set backbone.extractor.size"):
        decode_batch(batch, spec)
