"""`tsessm train`: fit a model on the train split, absorb the rest of the file, save it."""
from __future__ import annotations

import argparse
from typing import Any

from tsessm.commands import options

NAME = "train"
HELP = "fit a model on the train split, absorb the rest of the file, save it"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP)
    options.add_data_args(p)
    options.add_model_args(p)
    p.add_argument("--out", required=True, help="file to save the fitted model to")
    p.add_argument("--register", metavar="NAME", help="also log the model to MLflow and register it under NAME")
    p.add_argument("--alias", default="champion", help="alias the registered version gets (default champion)")
    options.add_track_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    # torch, the jobs and MLflow load here, when the command runs: `tsessm --help` stays fast
    from tsessm.distributed import distributed_context
    from tsessm.jobs import train
    from tsessm.tracking import start_run

    with distributed_context() as (rank, world, device):
        model, _ = options.fitted_or_new(args)
        if device is not None and "device" in model.get_params():
            model.set_params(device=device)
        source = options.open_source(args, getattr(model, "lookback", 1))
        lead = rank == 0  # under torchrun only rank 0 logs and saves
        with start_run(args.track and lead, args.experiment, run_name=f"train-{args.model}") as tracker:
            seconds = train(model, source, tracker)
            # Absorb the rest of the file (no refit) so `predict` forecasts what follows it.
            if source.train_stop < len(source.frame):
                model.update(source.frame.iloc[source.train_stop :])
            if lead:
                model.save(args.out)
                tracker.log_artifact(args.out)
                if args.register:
                    if not args.track:
                        raise ValueError("--register needs tracking; drop --no-track")
                    from tsessm.registry import promote  # mlflow loads only for --register

                    info = tracker.log_model(model, registered_model_name=args.register)
                    promote(args.register, info.registered_model_version, args.alias)
                    print(f"registered {args.register} version {info.registered_model_version} as @{args.alias}")
    if lead:
        print(f"trained {type(model).__name__} on {source.name} rows 0:{source.train_stop} in {seconds:.1f} s"
              f"{f' on {world} processes' if world > 1 else ''}, state advanced to the file's last row -> {args.out}")
    return 0
