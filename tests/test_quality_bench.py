"""bench/quality.py's routing: which experiment an image method runs with, per protocol."""
import argparse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def quality(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import quality

    return quality


def test_transfer_runs_the_mnist_settings_unchanged_on_data_never_tuned_on(quality):
    standard = argparse.Namespace(protocol="standard", experiment={})
    transfer = argparse.Namespace(protocol="transfer", experiment={})
    assert quality.image_experiment("diec", "mnist-test", standard) == "experiment=diec_mnist"
    assert quality.image_experiment("diec", "digits", standard) is None        # not applicable outside transfer
    assert quality.image_experiment("dific", "digits", transfer) == "experiment=dific_mnist"
    assert quality.image_experiment("kmeans", "digits", transfer) is None      # embedding methods: no experiment
    assert quality.IMAGE_SHAPES["digits"] == [1, 8, 8]


def test_transfer_refuses_the_dataset_its_settings_were_chosen_on(quality, capsys):
    with pytest.raises(SystemExit) as stopped:
        quality.main(["--protocol", "transfer", "--datasets", "mnist-test"])
    assert stopped.value.code == 2 and "not mnist-test" in capsys.readouterr().err
