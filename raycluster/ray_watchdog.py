"""Ends a local Ray session when the job that started it dies, however it dies.

`ray.init()` without an address starts Ray's processes (GCS, raylet, dashboard and its agents)
for the driver; on a normal exit or SIGTERM the driver shuts them down, but after SIGKILL (or an
out-of-memory kill) they keep running for minutes, holding ports and memory. `ensure_ray` starts
this watchdog beside them:

    python -m raycluster.ray_watchdog <driver pid> <session name>

It polls the driver every second; once the driver is gone it terminates every process whose
command line names that session (then kills what is left after 5 s) and exits. It touches no
other Ray session on the machine.
"""
from __future__ import annotations

import sys
import time


def session_processes(session_name: str) -> list:
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(session_name in part for part in process.info["cmdline"] or ()):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def end_session(session_name: str, grace_seconds: float = 5.0) -> int:
    """Terminate, then kill, the processes of one Ray session; returns how many there were."""
    import psutil

    processes = [p for p in session_processes(session_name) if p.pid != psutil.Process().pid]
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace_seconds)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    return len(processes)


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def watch(driver_pid: int, session_name: str, poll_seconds: float = 1.0) -> None:
    while alive(driver_pid):
        time.sleep(poll_seconds)
    time.sleep(poll_seconds)   # a clean shutdown is already under way: let it finish first
    end_session(session_name)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
