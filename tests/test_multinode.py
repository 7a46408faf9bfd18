"""Two Ray nodes on one machine: work spreads over both; losing one leaves a resumable state."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PORT = 6393


def ray_cli(*args, env, timeout=120):
    return subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True, timeout=timeout, env=env)


def start_worker_node(env):
    """`ray start --address ... --block` in its own process group, so the test can kill that node alone."""
    return subprocess.Popen([str(BIN / "ray"), "start", f"--address=127.0.0.1:{PORT}", "--num-cpus=2",
                             "--resources={\"worker_node\": 1}", "--block", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def wait_for_nodes(env, count, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = ray_cli("status", f"--address=127.0.0.1:{PORT}", env=env)
        if status.stdout.count(" node_") >= count:
            return
        time.sleep(2)
    raise AssertionError(f"{count} nodes did not come up: {status.stdout[-1500:]}")


def start_two_nodes():
    """A head (`ray start --head`) and one worker node on this machine; returns (env, worker process)."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    head = ray_cli("start", "--head", "--node-ip-address=127.0.0.1", f"--port={PORT}", "--num-cpus=2",
                   "--dashboard-host=127.0.0.1", "--dashboard-port=8293", "--disable-usage-stats", env=env)
    assert head.returncode == 0, head.stderr[-2000:]
    return env, start_worker_node(env)


SPREAD_SCRIPT = """
import json, ray
ray.init(address="127.0.0.1:%d", log_to_driver=False)
@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
class Where:
    def node(self):
        return ray.get_runtime_context().get_node_id()
actors = [Where.remote() for _ in range(3)]
print(json.dumps(sorted(set(ray.get([a.node.remote() for a in actors])))))
""" % PORT


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_nodes_share_work_and_a_lost_node_leaves_resumable_state(tmp_path):
    import ray

    ray.shutdown()
    env, worker = start_two_nodes()
    try:
        wait_for_nodes(env, 2)
        spread = subprocess.run([sys.executable, "-c", SPREAD_SCRIPT], capture_output=True, text=True, env=env,
                                timeout=120)
        assert spread.returncode == 0, spread.stderr[-2000:]
        assert len(json.loads(spread.stdout.strip().splitlines()[-1])) == 2, "actors on two distinct nodes"

        # Extraction on both nodes; the worker node dies once the first shard is written.
        job_env = {**env, "RAY_ADDRESS": f"127.0.0.1:{PORT}"}
        args = [sys.executable, str(REPO / "jobs" / "extract.py"), f"cache_dir={tmp_path}/cache",
                f"output_dir={tmp_path}/run", "data.samples_per_shard=60", "cluster.extract.concurrency=2",
                "cluster.extract.batch_size=16", "cluster.extract.min_concurrency=1"]
        subprocess.run([sys.executable, str(REPO / "jobs" / "make_shards.py"), *args[2:5]], env=job_env,
                       check=True, capture_output=True, timeout=120)
        store = tmp_path / "cache" / "embeddings" / "digits-pixels"
        job = subprocess.Popen(args, env=job_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 180
        while time.time() < deadline and not list(store.glob("part-*.parquet")) and job.poll() is None:
            time.sleep(0.2)
        os.killpg(worker.pid, signal.SIGKILL)                  # lose the worker node mid-run
        try:
            output, _ = job.communicate(timeout=90)
        except subprocess.TimeoutExpired:                      # a job stuck waiting for lost resources
            job.kill()
            output, _ = job.communicate()
        written_before = len(list(store.glob("part-*.parquet")))
        print(f"after losing the worker node: exit {job.returncode}, {written_before} of 30 shards written;"
              f" last output: {output[-600:]}")
        assert written_before >= 1
        if job.returncode != 0:
            assert "Traceback" in output or "error" in output.lower() or job.returncode < 0

        # A replacement node joins; the rerun embeds only what is missing.
        worker = start_worker_node(env)
        wait_for_nodes(env, 2)
        rerun = subprocess.run(args, env=job_env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
        reused = int(rerun.stdout.split("shards (")[1].split(" reused")[0])
        assert reused >= written_before if job.returncode != 0 else reused == 30
        from raycluster.data.store import EmbeddingStore

        assert len(EmbeddingStore(str(store)).load().keys) == 1797
    finally:
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        ray_cli("stop", "--force", env=env)


LOAD_SCRIPT = """
import sys
from raycluster.data.store import EmbeddingStore
print(EmbeddingStore(sys.argv[1]).load().vectors.shape)
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_main_job_on_two_nodes_finishes_under_a_driver_memory_cap_that_a_load_would_break(tmp_path):
    """80,000 images at 32x32x3 pixels: a 980 MB embedding store. The driver runs under a 1.7 GiB
    resident-memory cap (tests/memory_capped.py); reading the store into it (the old
    `EmbeddingStore.load()` path) is killed by that cap, the streamed main job is not."""
    import ray

    ray.shutdown()
    env, worker = start_two_nodes()
    cap_mib = 1700
    try:
        wait_for_nodes(env, 2)
        job_env = {**env, "RAY_ADDRESS": f"127.0.0.1:{PORT}"}
        args = [str(REPO / "jobs" / "train.py"), "data=procedural", "data.source.limit=80000",
                "backbone=pixels", "backbone.extractor.channels=3", "data.num_clusters=64",
                f"cache_dir={tmp_path}/cache", f"output_dir={tmp_path}/run", "cluster.stream.sample_rows=2000",
                "cluster.extract.concurrency=2", "cluster.extract.batch_size=256", "method=kmeans", "method.n_init=2"]
        job = subprocess.run([sys.executable, str(REPO / "tests" / "memory_capped.py"), str(cap_mib), *args],
                             env=job_env, capture_output=True, text=True, timeout=800)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["samples"] == 80000 and summary["dim"] == 3072
        assert summary["driver_peak_rss_gib"] * 1024 < cap_mib
        import pyarrow.parquet as pq

        keys = pq.read_table(summary["outputs"]["assignments"], columns=["key"]).column("key").to_pylist()
        assert len(keys) == len(set(keys)) == 80000
        assert summary["metrics"]["clusters_used"] == 64

        load_script = tmp_path / "load_store.py"
        load_script.write_text(LOAD_SCRIPT)
        loaded = subprocess.run([sys.executable, str(REPO / "tests" / "memory_capped.py"), str(cap_mib),
                                 str(load_script), summary["outputs"]["embeddings"]],
                                env=job_env, capture_output=True, text=True, timeout=300)
        assert loaded.returncode == 137 and "cap" in loaded.stderr, (loaded.returncode, loaded.stderr[-1000:])
    finally:
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        ray_cli("stop", "--force", env=env)
