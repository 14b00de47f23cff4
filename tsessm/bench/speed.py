"""The speed and size benchmark: every ratio measured side by side in one run, on this machine.

  measure                                                           goal
  forward+backward, LSTM / eSSM cores, same width/depth, L=96/336/720 >= 3x
  training time per epoch, LSTM / eSSM, ETTh1 S, forecaster defaults  >= 3x
  parameters, eSSM / LSTM: cores (blocks vs nn.LSTM), and whole nets  <= 13 %
  one observation -> new 24-step forecast: observe / update+predict <= 0.1 ms / 0.5 ms
  observe latency, history 100k / 1k                                <= 1.2x
  recompute over the last 720 rows / observe                        >= 50x
    (and the same at the bare net: forward over 720 rows / one net.step)
  batched observations per second over 10 000 series                >= 100 000 /s
  sliding-window backtest / one-pass backtest, ETTh1 test (OT)      >= 20x
  statsmodels extend+forecast / eSSM observe                        >= 10x
  peak RSS while training ETTm1 setting M at L=720                  <= 2 GB
    (and the same with glibc's MALLOC_MMAP_THRESHOLD_ fixed at 16 MiB)

Results go to pipelines/results/speed.json (machine, settings, measures) and a markdown table
for the README is printed. Timings only mean something on an otherwise idle machine.

    tsessm bench speed                                # the full run (tens of minutes on a CPU)
    tsessm bench speed --quick                        # smaller sizes, a minute or two
    tsessm bench speed --skip memory --skip panel --threads 4 --device cuda
    python pipelines/benchmark_speed.py --quick --out /tmp/speed.json
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from tsessm.bench import backtest_timing, core_timing, peak_memory, stream_timing
from tsessm.bench.machine import describe
from tsessm.bench.options import DEFAULT_OUT, FULL, GROUPS, QUICK, QUICK_OUT
from tsessm.bench.options import add_speed_arguments as add_arguments  # noqa: F401  (the suite's interface)
from tsessm.files import atomic_write_bytes
from tsessm.forecasters.essm import ESSMForecaster
from tsessm.forecasters.neural import resolve_device
from tsessm.scripts import suite_main

MEMORY_GOAL_MB = 2048.0
MEMORY_LOOKBACK = 720
MMAP_THRESHOLD = 16 << 20  # bytes: allocations at least this big are mmapped (glibc)


# ----- measures ------------------------------------------------------------------------------
def measure(name: str, label: str, value: float | None, unit: str, goal: tuple[str, float],
            detail: dict[str, Any]) -> dict[str, Any]:
    """One row of the result; goal = (">=" or "<=", target). `met` is None when nothing was measured."""
    op, target = goal
    met = None if value is None else bool(value >= target if op == ">=" else value <= target)
    return {"name": name, "label": label, "value": value, "unit": unit, "goal": {"op": op, "value": target},
            "met": met, "detail": detail}


def failed(group: str, exc: BaseException) -> dict[str, Any]:
    """The row of a measure group that raised: no value, no goal, the error in the detail."""
    return {"name": group, "label": group, "value": None, "unit": "", "goal": None, "met": None,
            "detail": {"error": f"{type(exc).__name__}: {exc}"}}


class _Context:
    """Settings, device and the small fitted eSSM shared by the streaming measures (built once)."""

    def __init__(self, s: dict[str, Any]) -> None:
        self.s = s
        self.width = {k: s[k] for k in ("d_model", "n_layers", "d_state", "n_heads")}
        self._base = None

    @property
    def base(self) -> ESSMForecaster:
        if self._base is None:
            self._base = stream_timing.base_model(self.width, self.s["device"], seed=self.s["seed"])
        return self._base


def _core(c: _Context) -> list[dict]:
    rows = []
    for length in c.s["lengths"]:
        d = core_timing.core_fwd_bwd_times(c.width, length, repeats=c.s["core_repeats"], device=c.s["device"],
                                           seed=c.s["seed"])
        rows.append(measure(f"core_L{length}", f"forward+backward, LSTM ÷ eSSM cores, L={length}",
                            d["lstm_over_essm"], "x", (">=", 3.0), {"method": core_timing.CORE_METHOD, **d}))
    return rows


def _train(c: _Context) -> list[dict]:
    d = core_timing.etth1_epoch_times(repeats=c.s["train_repeats"], device=c.s["device"],
                                      data_dir=c.s["data_dir"], seed=c.s["seed"])
    return [measure("train_etth1", "training time per epoch, LSTM ÷ eSSM, ETTh1 S, forecaster defaults",
                    d["lstm_over_essm"], "x", (">=", 3.0), {"method": core_timing.TRAIN_METHOD, **d})]


def _params(c: _Context) -> list[dict]:
    table = core_timing.param_counts(c.width, [c.width["n_heads"], *c.s["param_heads"]])
    mine = next(r for r in table if r["n_heads"] == c.width["n_heads"])
    heads = f"n_heads={c.width['n_heads']}"
    return [measure("params", f"parameters, eSSM ÷ LSTM cores (blocks vs nn.LSTM, {heads})",
                    100 * mine["core_ratio"], "%", ("<=", 13.0), {"by_heads": table}),
            measure("params_total", f"parameters, eSSM ÷ LSTM whole nets (with encoder and head, {heads})",
                    100 * mine["total_ratio"], "%", ("<=", 13.0), {"by_heads": table})]


def _latency(c: _Context) -> list[dict]:
    d = stream_timing.observe_latency(c.base, c.s["repeats"])
    return [measure("observe", "one observation → new 24-step forecast, observe (median)", d["observe_ms"], "ms",
                    ("<=", 0.1), d),
            measure("update_predict", "the same through update(one row) + predict() (median)",
                    d["update_predict_ms"], "ms", ("<=", 0.5), d)]


def _history(c: _Context) -> list[dict]:
    d = stream_timing.history_latency(c.base, c.s["history_rows"], c.s["repeats"])
    label = f"observe latency, history {_rows(d['history_long_rows'])} ÷ {_rows(d['history_short_rows'])}"
    return [measure("history", label, d["long_over_short"], "x", ("<=", 1.2), d)]


def _recompute(c: _Context) -> list[dict]:
    d = stream_timing.recompute_vs_observe(c.base, c.s["window"], c.s["repeats"])
    net = stream_timing.recompute_vs_step(c.base, c.s["window"], c.s["repeats"])
    return [measure("recompute", f"windowed recompute ({c.s['window']} rows) ÷ observe",
                    d["recompute_over_observe"], "x", (">=", 50.0), d),
            measure("recompute_net", f"the same at the net alone: forward over {c.s['window']} rows ÷ one step",
                    net["recompute_over_step"], "x", (">=", 50.0), net)]


def _panel(c: _Context) -> list[dict]:
    d = stream_timing.panel_throughput(c.width, c.s["n_series"], c.s["panel_rounds"], c.s["device"], c.s["seed"])
    return [measure("panel", f"batched observations/s, {c.s['n_series']:,} series", d["obs_per_s"], "obs/s",
                    (">=", 100_000.0), d)]


def _backtest(c: _Context) -> list[dict]:
    d = backtest_timing.backtest_times(c.width, repeats=c.s["backtest_repeats"], device=c.s["device"],
                                       data_dir=c.s["data_dir"], seed=c.s["seed"])
    return [measure("backtest", "sliding-window ÷ one-pass backtest, ETTh1 test (OT)",
                    d["windowed_over_one_pass"], "x", (">=", 20.0), d)]


def _arima(c: _Context) -> list[dict]:
    d = stream_timing.arima_vs_update(c.base, c.s["repeats"])
    return [measure("arima", "statsmodels extend+forecast ÷ eSSM observe", d["arima_over_essm"], "x",
                    (">=", 10.0), d)]


def _memory(c: _Context) -> list[dict]:
    model = {**c.width, "horizon": c.s["memory_horizon"], "lookback": MEMORY_LOOKBACK, "epochs": 1,
             "steps_per_epoch": c.s["memory_steps"], "device": c.s["device"], "random_state": c.s["seed"]}
    run = functools.partial(peak_memory.training_peak_memory, "ETTm1", model, data_dir=c.s["data_dir"],
                            threads=torch.get_num_threads())
    d = run()
    # glibc reuses freed 16-32 MB training buffers from its heap, where they fragment; a fixed mmap
    # threshold returns them to the kernel instead: lower peak, but every step faults pages anew.
    capped = run(env={"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)})
    capped["fit_s_over_default"] = capped["fit_s"] / d["fit_s"]
    label = f"peak RSS training ETTm1 M, L=720, H={c.s['memory_horizon']}"
    return [measure("memory", label, d["peak_rss_mb"], "MB", ("<=", MEMORY_GOAL_MB), d),
            measure("memory_mmap", f"the same, MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD >> 20} MiB "
                    f"(fit {capped['fit_s_over_default']:.2f}x the time)", capped["peak_rss_mb"], "MB",
                    ("<=", MEMORY_GOAL_MB), capped)]


MEASURES: dict[str, Callable[[_Context], list[dict]]] = {
    "core": _core, "train": _train, "params": _params, "latency": _latency, "history": _history,
    "recompute": _recompute,
    "panel": _panel, "backtest": _backtest, "arima": _arima, "memory": _memory,
}


def run_measures(s: dict[str, Any], log: Callable[[str], None] = print) -> list[dict]:
    """Every group not in s["skip"], in order; a group that raises is recorded with its error."""
    context, rows = _Context(s), []
    for group in GROUPS:
        if group in s["skip"]:
            continue
        log(f"[{group}] ...")
        start = time.perf_counter()
        try:
            done = MEASURES[group](context)
        except Exception as exc:  # one failed measure (e.g. a missing dataset) must not lose the others
            done = [failed(group, exc)]
        for row in done:
            row["detail"]["seconds"] = time.perf_counter() - start
        log(f"[{group}] {time.perf_counter() - start:.1f} s: " + ", ".join(_row_text(r) for r in done))
        rows += done
    return rows


def _rows(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{n:,}"


def _row_text(row: dict) -> str:
    if row["value"] is None:
        return f"{row['name']} failed ({row['detail'].get('error')})"
    return f"{row['name']} {_fmt(row['value'], row['unit'])}"


# ----- output --------------------------------------------------------------------------------
def _fmt(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.3g}×" if value < 100 else f"{value:,.0f}×"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "obs/s":
        return f"{value:,.0f} /s"
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:.4g} {unit}".strip()


def _fmt_goal(goal: dict[str, Any] | None, unit: str) -> str:
    if not goal:
        return "–"
    return ("≥ " if goal["op"] == ">=" else "≤ ") + _fmt(goal["value"], unit)


def machine_line(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    commit = (m.get("commit") or "unknown")[:7]
    load = m.get("load_average_start")
    return (f"Machine: {m['cpu']}, {m['cores']} cores, device {m['device']}; torch {m['torch']} with "
            f"{m['torch_threads']} thread(s), Python {m['python']}; commit {commit}, {m['date']}"
            + (f"; load average at start {load:.2f}" if load is not None else "")
            + f". Nets: d_model {s['d_model']}, n_layers {s['n_layers']}, d_state {s['d_state']}, "
            f"n_heads {s['n_heads']}" + ("; **quick run** (smaller sizes)." if s.get("quick") else "."))


def markdown_table(result: dict[str, Any]) -> str:
    """The README table: measure | measured | goal | met, under a line describing the machine."""
    lines = [machine_line(result), "", "| measure | measured | goal | met |", "|---|---|---|---|"]
    for row in result["measures"]:
        if row["value"] is None:
            measured, met = f"error: {row['detail'].get('error', '?')}", "–"
        else:
            measured, met = _fmt(row["value"], row["unit"]), "yes" if row["met"] else "**no**"
        lines.append(f"| {row['label']} | {measured} | {_fmt_goal(row['goal'], row['unit'])} | {met} |")
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, torch.device)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_json(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Write the result atomically: readers see the old file or the new one, never half of one."""
    text = json.dumps(result, indent=2, default=_jsonable, allow_nan=True) + "\n"
    atomic_write_bytes(path, text.encode())


# ----- command line --------------------------------------------------------------------------
def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved settings of a run: sizes from --quick or the full table, overridden by flags."""
    sizes = QUICK if args.quick else FULL
    s = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in sizes.items()}
    s.update({k: getattr(args, k) for k in ("quick", "d_model", "n_layers", "d_state", "n_heads", "param_heads",
                                            "memory_horizon", "window", "seed", "data_dir")})
    s["device"] = str(resolve_device(args.device))
    s["skip"] = sorted(set(args.skip))
    return s


def run(args: argparse.Namespace) -> int:
    """Measure everything not skipped, print the table, write the JSON. 0, or 1 if a measure failed."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    s = settings(args)
    machine = describe(torch.device(s["device"]))
    print(f"tsessm bench speed: {machine['cpu']}, {machine['torch_threads']} torch thread(s), "
          f"device {machine['device']}, load average {machine['load_average_start'] or 0:.2f}; {'quick' if s['quick'] else 'full'} run", flush=True)
    rows = run_measures(s, log=lambda text: print(text, flush=True))
    machine["load_average_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {"machine": machine, "settings": s, "measures": rows}
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    write_json(result, out)
    print("\n" + markdown_table(result))
    print(f"wrote {out}")
    return 1 if any(r["value"] is None for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    return suite_main(sys.modules[__name__], "benchmark_speed", argv)


if __name__ == "__main__":
    sys.exit(main())
