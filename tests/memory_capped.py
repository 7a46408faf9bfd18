"""Run a Python script with a cap on this process's resident memory (tests only).

    python tests/memory_capped.py CAP_MIB script.py [args...]

Linux ignores RLIMIT_RSS and an address-space limit breaks on thread stacks and arena
reservations, so a watchdog thread reads /proc/self/statm every 10 ms and ends the process
with exit status 137 (as the OOM killer would) once resident memory passes CAP_MIB. Child
processes are not capped: the cap is on the driver alone.
"""
import os
import runpy
import sys
import threading
import time


def watch(cap_bytes: int) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    while True:
        with open("/proc/self/statm") as handle:
            resident = int(handle.read().split()[1]) * page
        if resident > cap_bytes:
            sys.stderr.write(f"memory_capped: resident {resident / 2**20:.0f} MiB > cap {cap_bytes / 2**20:.0f} MiB\n")
            sys.stderr.flush()
            os._exit(137)
        time.sleep(0.01)


if __name__ == "__main__":
    cap = int(float(sys.argv[1]) * 2**20)
    threading.Thread(target=watch, args=(cap,), daemon=True).start()
    sys.argv = sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
