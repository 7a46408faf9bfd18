"""Where a method is fitted: a Ray task sized by the method (`fit_resources`), never the driver.

The driver passes the method (its settings) and a StoreRows (a store path and the fitted
post-processing, O(pca_dim x D)); the task reads what the method asks for and returns the
fitted method. A GPU asked for on a cluster without one is dropped with a warning, not left
waiting for a device that will never come.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def _fit(method, rows, with_labels: bool):
    from raycluster.app.cli import setup_logging
    from raycluster.ray_utils import quiet_ray_data

    setup_logging()   # the task's log lines reach the driver's console like its own
    quiet_ray_data()  # a worker's stderr is not a terminal: no progress bars, no execution plans
    return method.fit_rows(rows, with_labels)


def fit_off_driver(method, rows, with_labels: bool = False):
    """method.fit_rows(rows) in a Ray task; returns the fitted method. Ray must be running."""
    import ray

    resources = dict(method.fit_resources())
    if resources.get("num_gpus") and not ray.cluster_resources().get("GPU"):
        log.warning("%s: asked for a GPU but the Ray cluster has none; fitting on CPU", method.name)
        resources["num_gpus"] = 0
    task = ray.remote(_fit).options(name=f"fit-{method.name}", max_retries=0, **resources)
    return ray.get(task.remote(method, rows, with_labels))
