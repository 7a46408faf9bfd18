"""raycluster.ray_utils: what starting Ray does to the driver process."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Without RAY_TQDM_PATCH_PRINT=0 this failed with numba's "Untyped global name 'print'": Ray had
# replaced builtins.print by then, and pynndescent (UMAP) calls numba.get_num_threads() this way.
NUMBA_AFTER_RAY = """
import builtins, time, numba
from raycluster.ray_utils import ensure_ray
ensure_ray(num_cpus=1)
time.sleep(5)   # Ray patched print about 3 s after start
@numba.njit
def threads():
    return numba.get_num_threads()
print("print is builtin:", type(builtins.print).__name__ == "builtin_function_or_method", "threads:", threads())
"""


def test_numba_still_compiles_in_the_driver_after_ray_starts():
    result = subprocess.run([sys.executable, "-c", NUMBA_AFTER_RAY], capture_output=True, text=True, timeout=120,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "print is builtin: True threads:" in result.stdout


# What CI met when a `ray start` cluster of another process was up on the machine: ray.init()
# without an address joins the cluster /tmp/ray/ray_current_cluster records, and refuses num_cpus.
RECORDED_CLUSTER = """
import ray, ray._private.utils
ray._private.utils.read_ray_address = lambda temp_dir=None: "127.0.0.1:1"   # a cluster `ray start` recorded
from raycluster.ray_utils import ensure_ray
ensure_ray(num_cpus=1)
print("own cluster:", ray.cluster_resources().get("CPU"))
"""


def test_a_job_without_address_starts_its_own_ray_whatever_ray_start_recorded():
    result = subprocess.run([sys.executable, "-c", RECORDED_CLUSTER], capture_output=True, text=True, timeout=120,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "own cluster: 1.0" in result.stdout


LOCAL_DRIVER = """
import time
from ray._private import worker
from raycluster.ray_utils import ensure_ray
ensure_ray(num_cpus=1)
print("session", worker._global_node.session_name, flush=True)
time.sleep(300)
"""


def test_local_ray_is_private_and_ends_with_a_killed_driver():
    """Case 7 of the trust issue: after SIGKILL of the driver Ray's agents lived on for minutes, one
    listening on 0.0.0.0 (the unauthenticated metrics endpoint); the token file was 0644."""
    import os
    import signal
    import time

    import psutil

    from raycluster.ray_watchdog import session_processes

    driver = subprocess.Popen([sys.executable, "-c", LOCAL_DRIVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, cwd=REPO)
    try:
        session = driver.stdout.readline().split()[-1]
        assert session.startswith("session_")
        time.sleep(3)   # the dashboard's and autoscaler's servers come up just after ray.init returns
        listening = [conn.laddr for process in session_processes(session)
                     for conn in process.net_connections(kind="inet") if conn.status == psutil.CONN_LISTEN]
        assert listening and all(address.ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for address in listening), listening
        token = os.path.expanduser("~/.ray/auth_token")
        assert not os.path.exists(token) or os.stat(token).st_mode & 0o077 == 0
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    deadline = time.time() + 30
    while session_processes(session) and time.time() < deadline:
        time.sleep(1)
    assert session_processes(session) == []
