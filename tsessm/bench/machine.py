"""What a benchmark ran on: CPU, cores, threads, versions, device, commit, date."""
from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from typing import Any

import torch

from tsessm.tracking import git_commit


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe(device: torch.device) -> dict[str, Any]:
    """The machine and software a result came from (the load average flags a busy machine)."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "commit": git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
