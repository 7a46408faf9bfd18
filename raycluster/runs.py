"""A finished run folder (jobs/train.py's output_dir) as later jobs read it back.

    <run>/summary.json          what ran, metrics, timings, output paths
    <run>/assignments.parquet/  Parquet parts: key, cluster, confidence, label (-1 unknown)
    <run>/method.safetensors    the fitted method (jobs/predict.py; raycluster.methods.saving, no pickle)
    <run>/postprocess.npz       the fitted PCA / L2 step applied before the method (no pickle)
"""
from __future__ import annotations

import json
import os

from raycluster.data.postprocess import Postprocess

POSTPROCESS_FILE = "postprocess.npz"
METHOD_FILE = "method.safetensors"


def load_run_summary(run_dir: str) -> dict:
    """The summary.json of a finished `run_train` output_dir; one clear error when there is none."""
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run_dir must be a finished jobs/train.py output_dir")
    with open(path) as handle:
        return json.load(handle)


def load_postprocess(run_dir: str, summary: dict) -> Postprocess:
    """The run's fitted post-processing; runs from before it was saved had no PCA to refit
    (`predict` refused them) and only the L2 flag, which the summary records."""
    path = os.path.join(run_dir, POSTPROCESS_FILE)
    if os.path.exists(path):
        return Postprocess.load(path)
    post = summary.get("postprocess", {})
    if post.get("pca_dim"):
        raise ValueError(f"{run_dir} used backbone.pca_dim but has no {POSTPROCESS_FILE}: rerun jobs/train.py")
    return Postprocess(bool(post.get("l2_normalize", False)))
