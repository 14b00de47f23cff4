"""Micro-benchmark of the eSSM sequence core against an LSTM of the same width and depth.

Three things are measured, in one run, on the current machine (CPU by default):

1. Training step time (forward, MSE loss, backward; no optimizer) of `tsessm.nn.ESSMNet`
   and of an LSTM net built the same way around its core,
       Linear(n_in, d_model) -> nn.LSTM(d_model, d_model, num_layers=n_layers) -> Linear head,
   for several sequence lengths L. Repetitions of the two models are interleaved (and their
   order alternates) so that machine noise hits both; after warm-up the median is reported,
   with the ratio LSTM / eSSM (> 1 means the eSSM is faster).
2. Parameter counts of both nets and of their sequence cores alone (the ESSM blocks vs the
   nn.LSTM; the encoder and the head are shared), for the chosen number of heads and for a
   few others (--param-heads), with the ratio eSSM / LSTM.
3. Streaming latency of the eSSM at batch 1 in eval mode under torch.no_grad: one recurrent
   `step` against recomputing `forward` over the last `--window` inputs (default 720).
   The LSTM's one-step latency is shown for reference.

Run:
    python pipelines/bench_core.py                       # defaults: d_model 128, 2 layers
    python pipelines/bench_core.py --n-heads 8 --json bench.json
    python pipelines/bench_core.py --lengths 96,720 --repeats 3 --threads 2

Timings are only meaningful on an otherwise idle machine: with another busy process, torch's
threads wait on each other and times jump several-fold. The load average is printed at the
start (should be ~0) and a "spread" column flags noisy rows; on a shared box use --threads 1.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Callable

import torch
from torch import Tensor, nn

from tsessm.nn import ESSMNet


class LSTMNet(nn.Module):
    """x (batch, L, n_in) -> yhat (batch, L, horizon, n_out), with an nn.LSTM as the core."""

    def __init__(self, n_in: int, n_out: int, horizon: int, d_model: int, n_layers: int) -> None:
        super().__init__()
        self.horizon, self.n_out = horizon, n_out
        self.encoder = nn.Linear(n_in, d_model)
        self.lstm = nn.LSTM(d_model, d_model, num_layers=n_layers, batch_first=True)
        self.head = nn.Linear(d_model, horizon * n_out)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> Tensor:
        z, _ = self.lstm(self.encoder(x), state)
        return self.head(z).unflatten(-1, (self.horizon, self.n_out))

    def step(self, x_t: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple]:
        """x_t (batch, n_in) -> (yhat_t (batch, horizon, n_out), (h, c))."""
        z, state = self.lstm(self.encoder(x_t)[:, None], state)
        return self.head(z[:, 0]).unflatten(-1, (self.horizon, self.n_out)), state


# ----- model construction --------------------------------------------------------------------
def build_essm(args: argparse.Namespace, n_heads: int | None = None) -> ESSMNet:
    return ESSMNet(
        args.n_in,
        args.n_out,
        args.horizon,
        d_model=args.d_model,
        n_layers=args.n_layers,
        d_state=args.d_state,
        n_heads=args.n_heads if n_heads is None else n_heads,
    )


def build_lstm(args: argparse.Namespace) -> LSTMNet:
    return LSTMNet(args.n_in, args.n_out, args.horizon, args.d_model, args.n_layers)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----- timing helpers ------------------------------------------------------------------------
def time_call(fn: Callable[[], object], inner: int = 1) -> float:
    """Seconds per call of `fn`, averaged over `inner` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def interleaved_times(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int, inner: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each fn, once per repeat; repeats interleaved, order alternating."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else reversed(names):
            times[name].append(time_call(fns[name], inner))
    return times


def spread(ts: list[float]) -> float:
    """(max - min) / median: a large value flags a noisy measurement (e.g. a busy machine)."""
    return (max(ts) - min(ts)) / statistics.median(ts)


def train_step_fn(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], None]:
    """One training step without optimizer: forward, MSE loss, backward."""

    def run() -> None:
        model.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()

    return run


# ----- the three measurements ----------------------------------------------------------------
def bench_training(args: argparse.Namespace) -> list[dict]:
    essm, lstm = build_essm(args).train(), build_lstm(args).train()
    rows = []
    for length in args.lengths:
        x = torch.randn(args.batch, length, args.n_in)
        y = torch.randn(args.batch, length, args.horizon, args.n_out)
        times = interleaved_times(
            {"essm": train_step_fn(essm, x, y), "lstm": train_step_fn(lstm, x, y)},
            repeats=args.repeats,
            warmup=args.warmup,
        )
        med = {name: statistics.median(ts) for name, ts in times.items()}
        rows.append(
            {
                "L": length,
                "essm_ms": 1e3 * med["essm"],
                "lstm_ms": 1e3 * med["lstm"],
                "lstm_over_essm": med["lstm"] / med["essm"],
                "essm_spread": spread(times["essm"]),
                "lstm_spread": spread(times["lstm"]),
            }
        )
        print(f"  L={length:5d} done", flush=True)
    return rows


def param_counts(args: argparse.Namespace) -> list[dict]:
    lstm = build_lstm(args)
    lstm_total, lstm_core = n_params(lstm), n_params(lstm.lstm)
    rows = []
    for heads in sorted({args.n_heads, *args.param_heads}):
        if args.d_model % heads or args.d_state % heads:
            continue
        essm = build_essm(args, n_heads=heads)
        core = sum(n_params(b) for b in essm.blocks)
        ssm_only = sum(n_params(b.ssm) for b in essm.blocks)
        rows.append(
            {
                "n_heads": heads,
                "essm_total": n_params(essm),
                "lstm_total": lstm_total,
                "total_ratio": n_params(essm) / lstm_total,
                "essm_core": core,
                "essm_ssm_layers": ssm_only,
                "lstm_core": lstm_core,
                "core_ratio": core / lstm_core,
            }
        )
    return rows


def bench_streaming(args: argparse.Namespace) -> dict:
    essm, lstm = build_essm(args).eval(), build_lstm(args).eval()
    history = torch.randn(1, args.window, args.n_in)
    x_t = torch.randn(1, args.n_in)
    with torch.no_grad():
        _, essm_state = essm.prefill(history)
        _, (h, c) = lstm.lstm(lstm.encoder(history))
        fns = {
            "essm_step": lambda: essm.step(x_t, essm_state),
            "essm_forward": lambda: essm(history),
            "lstm_step": lambda: lstm.step(x_t, (h, c)),
        }
        times = interleaved_times(fns, repeats=args.repeats, warmup=args.warmup, inner=args.inner)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return {
        "window": args.window,
        **{f"{k}_ms": 1e3 * v for k, v in med.items()},
        "forward_over_step": med["essm_forward"] / med["essm_step"],
    }


# ----- printing ------------------------------------------------------------------------------
def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}\n{line}")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    print(line)
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    print(line)


def report(args: argparse.Namespace, train: list[dict], params: list[dict], stream: dict) -> None:
    print_table(
        f"1. Training step (fwd + MSE + bwd), batch {args.batch}, n_in {args.n_in}, "
        f"horizon {args.horizon}, n_heads {args.n_heads}; median of {args.repeats}",
        ["L", "eSSM ms", "LSTM ms", "LSTM/eSSM", "spread eSSM", "spread LSTM"],
        [[str(r["L"]), f"{r['essm_ms']:.1f}", f"{r['lstm_ms']:.1f}", f"{r['lstm_over_essm']:.2f}x",
          f"{100 * r['essm_spread']:.0f}%", f"{100 * r['lstm_spread']:.0f}%"] for r in train],
    )
    print("spread = (max - min) / median over the repeats; tens of % means a noisy machine")
    print_table(
        "2. Parameters (core = ESSM blocks incl. norm + mixer, vs nn.LSTM; "
        "ssm = ESSMLayers alone)",
        ["heads", "eSSM", "LSTM", "eSSM/LSTM", "eSSM core", "(ssm)", "LSTM core", "core ratio"],
        [[str(r["n_heads"]), f"{r['essm_total']:,}", f"{r['lstm_total']:,}",
          f"{100 * r['total_ratio']:.1f}%", f"{r['essm_core']:,}", f"{r['essm_ssm_layers']:,}",
          f"{r['lstm_core']:,}", f"{100 * r['core_ratio']:.1f}%"] for r in params],
    )
    print_table(
        f"3. Streaming latency, batch 1, eval, no_grad; window {stream['window']}; "
        f"median of {args.repeats} x {args.inner} calls",
        ["what", "ms / call"],
        [["eSSM step", f"{stream['essm_step_ms']:.3f}"],
         [f"eSSM forward over last {stream['window']}", f"{stream['essm_forward_ms']:.3f}"],
         ["forward / step", f"{stream['forward_over_step']:.1f}x"],
         ["(LSTM step, reference)", f"{stream['lstm_step_ms']:.3f}"]],
    )


# ----- CLI -----------------------------------------------------------------------------------
def int_list(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--d-state", type=int, default=64)
    p.add_argument("--n-heads", type=int, default=1)
    p.add_argument("--param-heads", type=int_list, default=[1, 8, 16],
                   help="extra head counts for the parameter table")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--n-in", type=int, default=1)
    p.add_argument("--n-out", type=int, default=1)
    p.add_argument("--horizon", type=int, default=24)
    p.add_argument("--lengths", type=int_list, default=[96, 336, 720])
    p.add_argument("--window", type=int, default=720, help="history recomputed by forward (3.)")
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--inner", type=int, default=20, help="calls per timed repeat in (3.)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=str, default=None, help="also write the figures here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    load_at_start = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"d_model {args.d_model}, n_layers {args.n_layers}, d_state {args.d_state}, "
          f"n_heads {args.n_heads}; load average {load_at_start:.2f}", flush=True)
    train = bench_training(args)
    params = param_counts(args)
    stream = bench_streaming(args)
    report(args, train, params, stream)
    print(f"\nload average at the end (this run included): {os.getloadavg()[0]:.2f}")
    if args.json:
        config = {k: v for k, v in vars(args).items() if k != "json"}
        config["torch_threads"] = torch.get_num_threads()
        config["load_average_at_start"] = load_at_start
        figures = {"config": config, "training": train, "params": params, "streaming": stream}
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
