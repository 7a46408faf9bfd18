"""Connecting to Ray, and sizing actor pools so they cannot starve Ray Data's own tasks."""
from __future__ import annotations

import logging
import os
from typing import Optional

log = logging.getLogger(__name__)


def quiet_ray_data() -> None:
    """Ray Data settings for readable logs, in the process that builds a dataset (they travel with
    it to the processes that execute it): no two-line execution plan per dataset, and progress
    bars only on a terminal (in a log file they are multi-line blocks; stages log their own line)."""
    import sys

    import ray.data

    context = ray.data.DataContext.get_current()
    context.print_on_execution_start = False
    context.enable_progress_bars = sys.stderr.isatty()
    # ...and not the warning that says they are off (once per process)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def ensure_ray(address: Optional[str] = None, num_cpus: Optional[int] = None) -> None:
    """Connect to `address` ("auto", "ray://host:10001"), or start a local Ray; no-op when
    already connected (tests share one instance). Under `ray job submit`, RAY_ADDRESS is set
    and wins over a null address."""
    import ray

    if ray.is_initialized():
        return
    # Ray's progress bars replace builtins.print with a Python function a few seconds after
    # ray.init; numba then fails to compile anything that calls numba.get_num_threads() in the
    # driver (pynndescent, so UMAP on >= 4096 rows: umap_kmeans, DiFiC's warm-up clusters, the
    # report's map). Keep print as it is.
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # The dashboard serves Ray's State API, which Ray Train's placement-group cleaner polls
        # every second: without it each poll logs a warning (hundreds per training run).
        # A laptop's Ray is not served to its network: Ray's single-machine mode (its default on
        # macOS and Windows; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read when Ray is imported) gives
        # the node the loopback address, and the processes ray.init starts then bind their
        # servers (dashboard and autoscaler metrics included) to 127.0.0.1 instead of 0.0.0.0.
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
        # address="local": always a Ray of our own. With no address Ray would join the cluster
        # the machine's last `ray start` recorded (/tmp/ray/ray_current_cluster), which refuses
        # num_cpus, and is another user's or test's cluster, not this job's.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, log_to_driver=True,
                 dashboard_host="127.0.0.1")
        start_watchdog()
    protect_token()
    quiet_ray_data()
    log.info("Ray resources: %s", ray.cluster_resources())


def start_watchdog() -> None:
    """A process that ends this driver's local Ray session when the driver dies, even by SIGKILL
    (`raycluster.ray_watchdog`)."""
    import subprocess
    import sys

    from ray._private import worker

    session = worker._global_node.session_name
    subprocess.Popen([sys.executable, "-m", "raycluster.ray_watchdog", str(os.getpid()), session],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


def protect_token() -> None:
    """Ray writes its cluster token to ~/.ray/auth_token readable by every local user: owner only."""
    path = os.path.expanduser("~/.ray/auth_token")
    if os.path.exists(path) and os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)


def actor_cpus(total_cpus: float, concurrency: int, requested: Optional[float] = None,
               use_gpu: bool = False, reserve: float = 1.0, must_fit_now: bool = True) -> float:
    """CPUs per actor of a pool such that `reserve` CPUs stay free for the job's other tasks.

    Seen on Ray 2.60 with 2 CPUs: two 1-CPU actors took both CPUs, their read tasks were starved
    (`backpressured:tasks(ResourceBudget)`) and the job hung. GPU actors get 1 CPU unless told.
    Raises ValueError when the pool cannot fit beside the reserve; must_fit_now=False (an
    autoscaling pool, which grows with the nodes an autoscaler adds) checks only `requested`.
    """
    if concurrency < 1:
        raise ValueError(f"extract concurrency must be >= 1, got {concurrency}")
    if requested is not None:
        cpus = float(requested)
    elif use_gpu:
        cpus = 1.0
    else:
        cpus = min(1.0, (total_cpus - reserve) / concurrency)
    if cpus <= 0 or (must_fit_now and cpus * concurrency > total_cpus - reserve + 1e-9):
        raise ValueError(
            f"{concurrency} extractor actor(s) x {cpus:g} CPU do not fit in {total_cpus:g} CPUs while keeping "
            f"{reserve:g} CPU for the job's other tasks: lower cluster.extract.concurrency or num_cpus_per_actor")
    return cpus
