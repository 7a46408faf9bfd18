import os
from collections import OrderedDict

import numpy as np
import pytest
import torch

from raycluster.features.effnet_lite import (EfficientNetLiteExtractor, KeyMappingError, create_effnet_lite,
                                             map_state_dict, weight_file)

from conftest import SHARED_DATA

TINY_IMAGENET = SHARED_DATA / "tinyimagenet-val" / "images"


def test_mapping_renames_by_position_and_checks_shapes():
    source = OrderedDict([("_conv_stem.weight", torch.ones(4, 3, 3, 3)), ("_bn0.weight", torch.ones(4)),
                          ("_fc.weight", torch.ones(10, 4))])
    target = OrderedDict([("conv_stem.weight", torch.zeros(4, 3, 3, 3)), ("bn1.weight", torch.zeros(4)),
                          ("classifier.weight", torch.zeros(10, 4))])
    mapped = map_state_dict(source, target)
    assert list(mapped) == list(target) and mapped["bn1.weight"].sum() == 4

    bad = OrderedDict(source)
    bad["_bn0.weight"] = torch.ones(5)
    with pytest.raises(KeyMappingError, match=r"tensor 1: _bn0.weight \(5,\) does not match bn1.weight \(4,\)"):
        map_state_dict(bad, target)
    with pytest.raises(KeyMappingError, match="source has 2 tensors, the model has 3"):
        map_state_dict(OrderedDict(list(source.items())[:2]), target)


def test_weights_file_in_efficientnet_pytorch_naming_loads(tmp_path):
    """A state dict the test writes itself, in EfficientNet-PyTorch-style names, loads exactly."""
    import timm

    torch.manual_seed(0)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    renamed = OrderedDict((f"_{key.replace('.', '_', 1)}", value) for key, value in reference.state_dict().items())
    path = tmp_path / "lite0-test.pth"
    torch.save(renamed, path)
    model = create_effnet_lite("lite0", str(path), features_only=False).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images))
    assert EfficientNetLiteExtractor.weights_note("lite0", str(path)).endswith(
        __import__("hashlib").sha256(path.read_bytes()).hexdigest())


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_packaged_weights_map_onto_timm(variant):
    try:
        path = weight_file(variant)
    except ImportError as err:
        pytest.skip(f"weights package not installed: {err}")
    model = create_effnet_lite(variant, path)
    assert model.num_features == 1280 and model(torch.zeros(1, 3, 64, 64)).shape == (1, 1280)


@pytest.mark.skipif(not TINY_IMAGENET.exists(), reason=f"real photos not found at {TINY_IMAGENET}")
def test_pretrained_lite0_recognises_real_photos():
    """The mapped weights are ImageNet's: many Tiny-ImageNet photos land in their own 1k class."""
    import timm
    from raycluster.data.transforms import decode_image, normalize

    wnids = timm.data.ImageNetInfo().label_names()
    model = create_effnet_lite("lite0", features_only=False).eval()
    spec = EfficientNetLiteExtractor.image_spec("lite0")
    images, targets = [], []
    for folder in sorted(os.listdir(TINY_IMAGENET))[:40]:
        if folder in wnids:
            for name in sorted(os.listdir(TINY_IMAGENET / folder))[:3]:
                images.append(decode_image((TINY_IMAGENET / folder / name).read_bytes(), spec))
                targets.append(wnids.index(folder))
    with torch.no_grad():
        predicted = model(normalize(torch.from_numpy(np.stack(images)), spec)).argmax(1).numpy()
    top1 = float((predicted == np.array(targets)).mean())
    assert len(targets) >= 60 and top1 >= 0.10, f"top-1 {top1:.3f} on {len(targets)} photos (chance 0.001)"


def test_extractor_runs_channels_last_with_the_same_features(tmp_path):
    """The actor keeps weights and inputs channels-last (faster convolutions); the features are the
    plain NCHW model's, flip-averaged or not."""
    import timm
    from raycluster.data.transforms import normalize

    torch.manual_seed(0)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    renamed = OrderedDict((f"_{key.replace('.', '_', 1)}", value) for key, value in reference.state_dict().items())
    path = tmp_path / "lite0-test.pth"
    torch.save(renamed, path)
    reference.reset_classifier(0)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 3, 64, 64), dtype=np.uint8)
    for flip_average in (False, True):
        extractor = EfficientNetLiteExtractor("lite0", str(path), flip_average=flip_average, device="cpu",
                                              forward_rows=2)
        assert extractor.layout(torch.zeros(1, 3, 8, 8)).is_contiguous(memory_format=torch.channels_last)
        batch = extractor({"pixels": pixels.copy(), "ok": np.array([True, False, True]), "key": np.arange(3)})
        inputs = normalize(torch.from_numpy(pixels[[0, 2]]), extractor.spec)
        with torch.no_grad():
            expected = reference(inputs)
            if flip_average:
                expected = (expected + reference(torch.flip(inputs, dims=[3]))) / 2
        np.testing.assert_allclose(batch["embedding"][[0, 2]], expected.numpy(), rtol=1e-4, atol=1e-5)
        assert not batch["embedding"][1].any() and "pixels" not in batch
