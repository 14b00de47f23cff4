"""What `loss_positions` saves: eSSM training steps scored at every window position against
steps scored at a draw of N positions, timed side by side in one run (interleaved repeats).

    OMP_NUM_THREADS=1 python pipelines/benchmark_loss_positions.py                 # lookback 336, H 720, 12 targets
    python pipelines/benchmark_loss_positions.py --horizon 24 --targets 7 --positions 48,96

Each timed call is the forecasters' own training loop (`fit_scaled`: windows of 2 x lookback
rows, AdamW, clipping) for `--steps` optimizer steps on a random walk of `--targets` columns, no
validation rows; only `loss_positions` differs between the columns of the table.
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from tsessm import ESSMForecaster
from tsessm.bench.timing import interleaved_times, spread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lookback", type=int, default=336)
    parser.add_argument("--horizon", type=int, default=720)
    parser.add_argument("--targets", type=int, default=12, help="columns, each a target (setting M)")
    parser.add_argument("--positions", default="48", help="comma-separated loss_positions to time against all")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = 4 * args.lookback + 2 * args.horizon
    walk = np.random.default_rng(0).standard_normal((rows, args.targets)).cumsum(axis=0)
    xs = ((walk - walk.mean(0)) / walk.std(0)).astype(np.float32)
    choices = {"all": None, **{f"{n}": int(n) for n in args.positions.split(",")}}

    def epoch(n: int | None):
        model = ESSMForecaster(horizon=args.horizon, lookback=args.lookback, epochs=1, steps_per_epoch=args.steps,
                               loss_positions=n, verbose=0, random_state=0, device="cpu")
        return lambda: model.fit_scaled([(xs, len(xs))], list(range(args.targets)))

    times = interleaved_times({name: epoch(n) for name, n in choices.items()}, repeats=args.repeats)
    base = statistics.median(times["all"])
    print(f"eSSM training step, lookback {args.lookback}, H {args.horizon}, {args.targets} targets, "
          f"{torch.get_num_threads()} threads; median of {args.repeats} interleaved repeats")
    print("| loss_positions | s / step | all / this | spread |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        per_step = statistics.median(ts) / args.steps
        print(f"| {name} | {per_step:.3f} | {base / statistics.median(ts):.2f} | {spread(ts):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
