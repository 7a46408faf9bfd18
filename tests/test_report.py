"""The cluster report: bounded choices, embedding-only reports, and the page in a real browser."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from raycluster.report import ReportData, ReportOptions, write_report
from raycluster.report.select import bounded_sample, representative_members

from conftest import REPO, SHARED_DATA

def test_bounded_sample_caps_and_keeps_small_sets_whole():
    assert bounded_sample(10, 50).tolist() == list(range(10))
    picked = bounded_sample(1_000_000, 5000, seed=1)
    assert len(picked) == 5000 == len(np.unique(picked))
    assert picked.min() >= 0 and picked.max() < 1_000_000 and (np.diff(picked) > 0).all()
    assert not np.array_equal(picked, bounded_sample(1_000_000, 5000, seed=2))
    with pytest.raises(ValueError):
        bounded_sample(10, 0)


def test_representative_members_are_central_and_least_confident():
    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 0.0], [0.0, 10.0]])
    cluster = np.repeat([0, 1], 100)
    vectors = (centres[cluster] + rng.normal(size=(200, 2))).astype(np.float32)
    confidence = rng.uniform(size=200).astype(np.float32)
    members = representative_members(vectors, cluster, confidence, n_clusters=3, central=5, uncertain=3)
    assert set(members) == {0, 1, 2}
    assert len(members[2]["central"]) == len(members[2]["uncertain"]) == 0  # an empty cluster
    for cid in (0, 1):
        central, uncertain = members[cid]["central"], members[cid]["uncertain"]
        assert len(central) == 5 and len(uncertain) == 3 and (cluster[central] == cid).all()
        assert not set(central) & set(uncertain)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        direction = unit[cluster == cid].mean(0)
        similarity = unit @ (direction / np.linalg.norm(direction))
        own = np.flatnonzero(cluster == cid)
        assert set(central) == set(own[np.argsort(-similarity[own])[:5]])
        rest = np.setdiff1d(own, central)
        assert set(uncertain) == set(rest[np.argsort(confidence[rest])[:3]])


def test_embedding_only_report_has_everything_but_thumbnails(tmp_path):
    """The ImageNet-50 DINO features have no images: metrics, map and cards, no thumbnails;
    the output stays small whatever N is (map sampled)."""
    torch = pytest.importorskip("torch")
    folder = SHARED_DATA / "imagenet50-dino-vits16"
    if not folder.exists():
        pytest.skip(f"{folder} not found (see ../shared/data/README)")
    from sklearn.cluster import KMeans

    vectors = torch.load(folder / "features_val.pth").float().numpy()
    labels = torch.load(folder / "labels_val.pth").numpy()
    kmeans = KMeans(50, n_init=1, random_state=0).fit(vectors)
    keys = np.array([f"{i:05d}" for i in range(len(vectors))], dtype=object)
    summary = {"data": "imagenet50-dino-vits16", "backbone": "dino_vits16", "method": "kmeans", "k": 50,
               "dim": 384, "metrics": {"acc": 0.5, "nmi": 0.6, "ari": 0.4}}
    report_dir = tmp_path / "report"
    data = ReportData.from_arrays(keys, vectors, kmeans.labels_, np.ones(len(vectors)), 50, labels)
    info = write_report(str(report_dir), summary, data, store=None,
                        options=ReportOptions(map_points=700, map_method="pca"))
    page = (report_dir / "index.html").read_text()
    assert info["thumbnails"] == 0 and not (report_dir / "thumbs").exists()
    assert page.count("data-cluster=") == 50 and "No thumbnails" in page and "<img src=\"thumbs" not in page
    assert info["map_points"] == 700 and "PCA of 700 sampled points" in page  # the page states the sample
    assert all((report_dir / "assets" / f"{name}.png").stat().st_size > 1000
               for name in ("map", "sizes", "confidence", "contingency"))
    assert "majority class" in page and "0.5000" in page
    # a second build replaces the first atomically: no temp or old folders left behind
    write_report(str(report_dir), summary, ReportData.from_arrays(keys, vectors, kmeans.labels_, np.ones(len(vectors)), 50),
                 options=ReportOptions(map_points=700, map_method="pca"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    assert "majority class" not in (report_dir / "index.html").read_text()  # no labels, no class rows


@pytest.mark.slow
def test_report_of_main_job_renders_in_chromium(tmp_path, compose_config, ray_local):
    """Main job on digits with report=true, opened in Debian's Chromium (headless)."""
    from raycluster.app.pipeline import run_train
    from raycluster.report.browser import inspect_page

    summary = run_train(compose_config(["report=true"]))
    page_path = summary["outputs"]["report"]
    assert os.path.exists(page_path) and summary["report_seconds"] > 0

    page = inspect_page(page_path, screenshot=str(tmp_path / "report.png"))
    errors, cards, images = page["errors"], page["cards"], page["images"]
    assert errors == []
    assert cards == summary["k"] == 10
    assert len(images) > 10 * 8 and all(ok for _, ok in images), [src for src, ok in images if not ok]
    rendered = {name for name, ok in images if ok}
    assert {"map", "sizes", "confidence", "contingency"} <= rendered
    thumbs = [name for name in rendered if name.startswith("thumbs/")]
    assert len(thumbs) == 10 * (8 + 4)
    assert (tmp_path / "report.png").stat().st_size > 50_000

    # jobs/report.py rebuilds the same run's report from its folder
    run_dir = os.path.abspath(os.path.dirname(os.path.dirname(page_path)))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    rebuilt = subprocess.run([sys.executable, str(REPO / "jobs" / "report.py"), f"run_dir={run_dir}", "map_method=pca",
                              "central=2", "uncertain=1"], cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert "report written" in rebuilt.stderr and "30 thumbnails" in rebuilt.stderr
    assert list(elsewhere.iterdir()) == []   # nothing (no Hydra <job>.log) left in the caller's folder


def test_report_job_errors_on_a_folder_that_is_not_a_run(tmp_path):
    result = subprocess.run([sys.executable, "jobs/report.py", f"run_dir={tmp_path}"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "summary.json not found" in result.stderr


def test_members_shown_come_from_a_bounded_number_of_parts():
    """Thumbnails are read back shard by shard: with rows from 10 parts and thumbnail_parts=3,
    every member shown lies in 3 parts at most, whatever N is."""
    from raycluster.report.build import _rows_in_few_parts

    parts = np.repeat(np.arange(10), 50)
    chosen = _rows_in_few_parts(parts, len(parts), 3, seed=0)
    assert len(np.unique(parts[chosen])) == 3 and len(chosen) == 150
    assert len(_rows_in_few_parts(parts, len(parts), 64, seed=0)) == 500
    assert len(_rows_in_few_parts(None, 7, 3, seed=0)) == 7


@pytest.mark.slow
def test_hostile_class_and_file_names_stay_text_in_chromium(tmp_path, compose_config, ray_local):
    """Case 3 of the trust issue: autoescaping was off, so a folder or file name became markup that
    ran in the browser. Names like these are legal on Linux and arrive in shared photo folders."""
    from raycluster.data.builtin import encode_png
    from raycluster.app.pipeline import run_train
    from raycluster.report.browser import inspect_page

    hostile_class = "<img src=x onerror=alert('class')>"
    hostile_file = 'x" onmouseover="alert(1)" y="'
    rng = np.random.default_rng(0)
    for label, name in enumerate(["<b>bold</b>", hostile_class]):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(12):
            stem = f"{hostile_file}{i}" if i % 3 == 0 else f"img{i}"
            pixels = (rng.random((8, 8)) * 60 + 180 * label).astype(np.uint8)
            (tmp_path / "photos" / name / f"{stem}.png").write_bytes(encode_png(pixels))
    summary = run_train(compose_config(["report=true", "data=folder", f"data.source.path={tmp_path}/photos",
                                       "data.num_clusters=2", "backbone.extractor.size=8"]))
    page = inspect_page(summary["outputs"]["report"])
    assert page["dialogs"] == [] and page["handlers"] == 0 and page["scripts"] == 0, page
    html = open(summary["outputs"]["report"]).read()
    assert hostile_class not in html and "&lt;img src=x onerror=alert(" in html
