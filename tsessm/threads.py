"""How many threads torch should use here and now.

torch starts one thread per core. When another job keeps cores busy, each parallel operator waits
at its barrier for a thread that is not running: beside one CPU-bound process on 2 cores the demo's
eSSM fit took 13x its idle time (224 s against 17 s), far more than a fair share explains. The
command line therefore asks for the cores that are free when it starts. (In a container,
/proc/loadavg counts the whole host and CPU quotas are not read: set TSESSM_THREADS there.)
"""
from __future__ import annotations

import os
import sys
import time

# Set by a user who chose the thread count; then tsessm does not choose.
USER_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TSESSM_THREADS")


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _others_running(samples: int = 5, interval: float = 0.01) -> int:
    """Processes running besides this one, averaged over a few instants of /proc/loadavg's
    "running/total" (the 1-minute load average would count this process's own recent work)."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)  # the reader counts itself
        except (OSError, ValueError, IndexError):
            break
        if i + 1 < samples:
            time.sleep(interval)
    if counts:
        return max(0, round(sum(counts) / len(counts)))
    return round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0


def free_cores() -> int:
    """Cores not taken by other running work (at least 1)."""
    return max(1, _cores() - _others_running())


def choose_torch_threads() -> int | None:
    """Set torch's thread count to the free cores, unless the user chose one (TSESSM_THREADS,
    OMP_NUM_THREADS or MKL_NUM_THREADS). Returns the count set, or None when left alone."""
    import torch

    chosen = os.environ.get("TSESSM_THREADS")
    if chosen:
        try:
            torch.set_num_threads(max(1, int(chosen)))
            return torch.get_num_threads()
        except ValueError:
            print(f"tsessm: TSESSM_THREADS={chosen!r} is not a number; using the free cores", file=sys.stderr)
    if any(os.environ.get(name) for name in USER_SETTINGS if name != "TSESSM_THREADS"):
        return None
    torch.set_num_threads(free_cores())
    return torch.get_num_threads()
