"""`ray start --head` on loopback with token auth, `ray job submit` of the main job, `ray stop`."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def ray_cli(*args, env=None, timeout=180):
    return subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def submit_when_ready(args, env, timeout=90):
    """`ray start` returns before the dashboard agent takes jobs ("No available agent to submit
    job, please try again later", seen in CI): retry only that answer, for up to `timeout` s."""
    deadline = time.time() + timeout
    while True:
        submitted = ray_cli("job", "submit", "--submission-id", f"raycluster-test-{time.time_ns()}", *args,
                            env=env, timeout=400)
        if "No available agent" not in submitted.stdout + submitted.stderr or time.time() > deadline:
            return submitted
        time.sleep(3)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_job_submit_runs_main_job_with_token_auth(tmp_path):
    import ray

    ray.shutdown()  # `ray stop` below ends every Ray process on the machine, the test session's too
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    started = ray_cli("start", "--head", "--node-ip-address=127.0.0.1", "--port=6391", "--dashboard-host=127.0.0.1",
                      "--dashboard-port=8291", "--num-cpus=2", "--disable-usage-stats", env=env)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        submit_env = {**env, "RAY_ADDRESS": "http://127.0.0.1:8291"}
        submitted = submit_when_ready(["--working-dir", ".", "--runtime-env", "infra/runtime_env.yaml", "--",
                                       "python", "jobs/train.py", f"cache_dir={tmp_path}/cache",
                                       f"output_dir={tmp_path}/run", "data.source.limit=600", "method=kmeans"], submit_env)
        assert submitted.returncode == 0, (submitted.stdout + submitted.stderr)[-3000:]
        assert "succeeded" in submitted.stdout + submitted.stderr
        job_id = next(line.split("'")[1] for line in (submitted.stdout + submitted.stderr).splitlines()
                      if "Job '" in line and "succeeded" in line)
        logs = ray_cli("job", "logs", job_id, env=submit_env)
        assert logs.returncode == 0 and "ACC" in logs.stdout and "assignments:" in logs.stdout
        assert (tmp_path / "run" / "assignments.parquet").exists()
        assert (tmp_path / "run" / "report" / "index.html").exists()  # report=true is the default

        # Without the token the job API refuses: auth is on, not decorative.
        no_token = {k: v for k, v in submit_env.items() if k != "RAY_AUTH_MODE"}
        no_token["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "missing-token")
        refused = ray_cli("job", "list", env={**no_token, "HOME": str(tmp_path)}, timeout=60)
        assert refused.returncode != 0 and "authentication" in (refused.stdout + refused.stderr).lower()
    finally:
        ray_cli("stop", "--force", env=env)
