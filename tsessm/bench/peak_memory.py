"""Peak resident memory of training, measured in a child process so nothing else counts.

The child loads the data, fits an ESSMForecaster (train split, validation split for the
validation loss) and reports its own peak RSS at the end (the kernel's high-water mark of that
process: imports and data included).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tsessm

MARKER = "PEAK_MEMORY_RESULT "
_CHILD = "from tsessm.bench.peak_memory import child_main; child_main()"


def max_rss_mb() -> float:
    """This process's peak RSS in MiB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own memory.
    getrusage's ru_maxrss is not used there: across fork + exec it keeps the parent's peak, so
    a child started by a big parent would report at least the parent's size.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def child_main() -> None:
    """Entry point of the child: the config is JSON in argv[1]; the result is one marked JSON line."""
    config = json.loads(sys.argv[1])
    import torch

    from tsessm.forecasters.essm import ESSMForecaster
    from tsessm.jobs import open_data

    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    source = open_data(config["data"], lookback=config["model"]["lookback"], columns=config.get("columns"),
                       data_dir=config.get("data_dir"))
    before_fit = max_rss_mb()
    model = ESSMForecaster(**config["model"])
    start = time.perf_counter()
    model.fit(source.train, y_val=source.validation)
    result: dict[str, Any] = {
        "peak_rss_mb": max_rss_mb(), "rss_before_fit_mb": before_fit, "fit_s": time.perf_counter() - start,
        "train_rows": len(source.train), "validation_rows": len(source.validation),
        "columns": list(source.frame.columns), "torch_threads": torch.get_num_threads(),
        # as this process saw it: the variables given, and any glibc allocator setting inherited
        "env": {k: v for k, v in os.environ.items() if k in config.get("env", []) or k.startswith("MALLOC_")},
    }
    if model.device_.type == "cuda":
        result["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(model.device_) / 2**20
    print(MARKER + json.dumps(result), flush=True)


def training_peak_memory(data: str, model: dict[str, Any], *, columns: list[str] | None = None,
                         data_dir: str | None = None, threads: int | None = None, timeout: float = 3600,
                         env: dict[str, str] | None = None) -> dict:
    """Run one training of ESSMForecaster(**model) on `data` (a benchmark name or a CSV/Parquet path)
    in a child process; returns its peak RSS (MiB) and what it reports.

    env: extra environment variables of the child (e.g. allocator settings), recorded in the result.
    """
    extra_env = dict(env or {})
    config = {"data": data, "columns": columns, "data_dir": data_dir, "threads": threads,
              "model": {"verbose": 0, **model}, "env": sorted(extra_env)}
    env = {**os.environ, **extra_env}
    # The child imports this very tsessm, also when it is not installed.
    package_root = str(Path(tsessm.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(config)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"the training child failed (exit {done.returncode}): " + " | ".join(tail))
    result = json.loads(lines[-1][len(MARKER):])
    return {**result, "child_wall_s": time.perf_counter() - start, "data": data, "model": config["model"],
            "how": "child process; its own peak RSS at the end of training (Linux: VmHWM)"}
