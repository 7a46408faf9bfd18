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


def test_idx_dataset_option_refuses_bad_forms_before_any_work(quality, capsys):
    for argv in (["--idx-dataset", "fashion"], ["--idx-dataset", "digits=/somewhere"], ["--datasets", "fashion"]):
        with pytest.raises(SystemExit) as stopped:
            quality.main(argv)
        assert stopped.value.code == 2
    assert "unknown --datasets ['fashion']" in capsys.readouterr().err


def test_an_idx_folder_without_its_files_is_skipped_with_the_reason(quality, tmp_path):
    args = argparse.Namespace(idx_dataset={"mine": str(tmp_path)}, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(quality.Skip, match="t10k-images-idx3-ubyte"):
        quality.single_dataset("mine", args)


def test_the_studies_over_saved_runs_read_an_idx_dataset_as_the_bench_does(quality, monkeypatch, tmp_path):
    """A study's --idx-dataset reaches `single_dataset` (a study without it still reads the built-in sets);
    its pixel rows have the bench's 28x28 shape."""
    monkeypatch.syspath_prepend(str(REPO / "bench" / "studies"))
    from diec_start_criterion import image_shape, study_parser

    args = study_parser("doc", "runs", []).parse_args(["--idx-dataset", f"mine={tmp_path}", "--cache-dir", str(tmp_path)])
    assert args.idx_dataset == [("mine", str(tmp_path))] and image_shape("mine") == [1, 28, 28]
    with pytest.raises(quality.Skip, match="t10k-images-idx3-ubyte"):
        quality.single_dataset("mine", args)
    with pytest.raises(ValueError, match="unknown dataset 'mine'"):
        quality.single_dataset("mine", argparse.Namespace(cache_dir=str(tmp_path)))


def test_fashion_idx_writes_a_balanced_mnist_format_set_and_drops_short_rows(monkeypatch, tmp_path, capsys):
    import json

    import numpy as np

    from raycluster.data.builtin import mnist_arrays

    monkeypatch.syspath_prepend(str(REPO / "bench" / "studies"))
    import fashion_idx

    clothes = tmp_path / "package" / "src" / "clothes"
    clothes.mkdir(parents=True)
    for label in range(10):
        rows = [[label * 20 + i] * 784 for i in range(4)] + ([[]] if label == 0 else [])
        (clothes / f"{label}.json").write_text(json.dumps({"data": rows}))
    fashion_idx.main([str(tmp_path / "package"), str(tmp_path / "idx"), "--per-class", "3"])
    images, labels = mnist_arrays(str(tmp_path / "idx"))
    assert images.shape == (30, 28, 28) and np.bincount(labels).tolist() == [3] * 10
    assert all(images[i].min() // 20 == labels[i] for i in range(30))      # each image kept its own label
    assert "class 0: skipped 1 rows" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="need >= 5"):
        fashion_idx.main([str(tmp_path / "package"), str(tmp_path / "idx"), "--per-class", "5"])


def test_glyphs_idx_writes_the_same_balanced_letters_for_a_seed_framed_as_mnist(monkeypatch, tmp_path, capsys):
    import numpy as np

    from raycluster.data.builtin import mnist_arrays

    monkeypatch.syspath_prepend(str(REPO / "bench" / "studies"))
    import glyphs_idx

    glyphs_idx.main([str(tmp_path / "idx"), "--per-class", "4"])
    images, labels = mnist_arrays(str(tmp_path / "idx"))
    assert images.shape == (40, 28, 28) and np.bincount(labels).tolist() == [4] * 10
    assert ((images > 0).reshape(40, -1).sum(1) >= 20).all()                # every image drew its letter
    border = np.ones((28, 28), bool)
    border[2:-2, 2:-2] = False
    assert images[:, border].mean() < 0.05 * images[:, ~border].mean()     # framed in the middle, as MNIST
    fonts = [font.stem for font in glyphs_idx.text_fonts()]                  # the faces matplotlib ships
    assert f"in {len(fonts)} fonts" in capsys.readouterr().out and len(fonts) >= 10 and "DejaVuSans" in fonts
    again, again_labels, _ = glyphs_idx.make_glyphs(4, 0)
    np.testing.assert_array_equal(again, images)
    np.testing.assert_array_equal(again_labels, labels)


def test_each_method_is_measured_against_the_baselines_that_ran_beside_it(quality):
    rows = [{"dataset": "digits", "method": method, "acc": acc} for method, acc in
            [("kmeans", 0.80), ("kmeans", 0.78), ("umap_kmeans", 0.88), ("diec", 0.95), ("dific", 0.86),
             ("diec_init_kmeans", 0.94)]] + [{"dataset": "other", "method": "diec", "acc": 0.5}]
    lines = quality.baseline_gaps(rows)
    assert "digits: diec ACC 0.950 (1 seed), +7.0 points over umap_kmeans, +16.0 points over kmeans" in lines
    assert "digits: dific ACC 0.860 (1 seed), LOSES to umap_kmeans by 2.0 points, +7.0 points over kmeans" in lines
    assert "digits: umap_kmeans ACC 0.880 (1 seed), +9.0 points over kmeans" in lines
    assert "digits: kmeans ACC 0.790 (mean of 2 seeds), LOSES to umap_kmeans by 9.0 points" in lines
    assert not any(line.startswith("other:") for line in lines)   # no baseline ran on it
    assert len(lines) == 5   # kmeans against umap_kmeans too, and the init row


def test_learned_vs_pixels_scores_each_space_by_the_search_criterion_and_by_labels(quality, monkeypatch):
    """`scored_start` fits the start on a space and returns (its label-free separation, its ACC), each a
    mean over UMAP seeds: ten tight blobs score higher on both than the same rows drowned in noise."""
    monkeypatch.syspath_prepend(str(REPO / "bench" / "studies"))
    import numpy as np
    from learned_vs_pixels import scored_start

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    blobs = (rng.normal(size=(10, 16)) * 10)[labels] + rng.normal(size=(300, 16))
    noise = blobs * 0.05 + rng.normal(size=(300, 16)) * 5
    manifold = {"n_components": 5, "n_neighbors": 10, "metric": "euclidean", "clusterer": "kmeans"}
    clear, drowned = (scored_start(rows.astype(np.float32), labels, manifold, 0, 2) for rows in (blobs, noise))
    assert clear[1] == 1.0 and drowned[1] < 0.6
    assert clear[0] > drowned[0]
