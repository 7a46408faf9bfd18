"""Shared fixtures: one local Ray per test session, real configs composed and shrunk."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAYCLUSTER_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def ray_local():
    """Local Ray with 2 logical CPUs, the size of the machines this project is tested on.

    Started once and shared (~3 s to start); function-scoped so that a test that must run
    `ray stop` (job submission) can shut it down and later tests start it again.
    """
    import ray

    if not ray.is_initialized():   # "local": never the cluster another process's `ray start` recorded
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    return ray


@pytest.fixture(scope="session", autouse=True)
def _shutdown_ray_at_exit():
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def compose_config(tmp_path):
    """The real config, composed as jobs/train.py would, with outputs under tmp_path (no report
    unless a test asks for `report=true`: tests/test_report.py covers it)."""
    from raycluster.config import compose

    return lambda overrides=(): compose([f"cache_dir={tmp_path}/cache", f"output_dir={tmp_path}/run", "report=false",
                                         *pinned_method(overrides), *overrides])


def pinned_method(overrides) -> list[str]:
    """k-means unless the test picks a method: the default (CLUDI) trains for a minute, and the
    tests that do not name a method are about the pipeline around it."""
    return [] if any(o.startswith(("method=", "experiment=")) for o in overrides) else ["method=kmeans"]
