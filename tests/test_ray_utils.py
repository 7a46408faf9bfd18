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
