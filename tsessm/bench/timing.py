"""Timing helpers shared by the benchmark suites: interleaved repeats and their medians."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def synchronizer(device: torch.device) -> Callable[[], None] | None:
    """What to call before reading the clock: CUDA runs asynchronously, the CPU does not."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return None


def time_call(fn: Callable[[], object], inner: int = 1, sync: Callable[[], None] | None = None) -> float:
    """Seconds per call of `fn`, averaged over `inner` back-to-back calls."""
    if sync:
        sync()
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    if sync:
        sync()
    return (time.perf_counter() - start) / inner


def interleaved_times(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    inner: int = 1,
    sync: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each fn, once per repeat; repeats interleaved, order alternating,
    so that machine noise hits every fn alike."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else reversed(names):
            times[name].append(time_call(fns[name], inner, sync))
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(ts) for name, ts in times.items()}


def spread(ts: list[float]) -> float:
    """(max - min) / median: a large value flags a noisy measurement (e.g. a busy machine)."""
    return (max(ts) - min(ts)) / statistics.median(ts)
