"""`tsessm`: train, predict, backtest and the demo job from the command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from tsessm.redact import mask

EXAMPLES = """\
examples:
  tsessm demo                                     # train eSSM on ETTh1, backtest vs baselines, plot
  tsessm train ETTh1 --columns OT --horizon 24 --out essm.tsm
  tsessm backtest ETTh1 --columns OT --model essm.tsm --mode both --plot backtest.png
  tsessm predict --model essm.tsm --update new_rows.csv --out forecast.csv
  tsessm train my_series.csv --target load --model lstm --epochs 5 --out lstm.tsm
"""

# Model options with a flag of their own; anything else goes through --set name=value.
# model flag -> (type, help); unset flags keep the model's own default
MODEL_FLAGS = {
    "lookback": (int, "rows one training window warms up on; the windowed backtest sees this many (default 96)"),
    "d_model": (int, "eSSM/LSTM width (default 64)"),
    "n_layers": (int, "eSSM blocks or LSTM layers (default 2)"),
    "d_state": (int, "eSSM complex states per layer, split over the heads (default 64)"),
    "n_heads": (int, "eSSM heads: block-diagonal systems, with a head mixer when more than one (default 1)"),
    "epochs": (int, "training epochs, with early stopping on the validation split (default 10)"),
    "lr": (float, "AdamW learning rate (default 1e-3)"),
    "batch_size": (int, "training windows per step (default 32)"),
    "dropout": (float, "dropout rate (default 0.1)"),
    "device": (str, "auto (CUDA when present), cpu, cuda or cuda:N (default auto)"),
    "discretization": (str, "eSSM discretisation: zoh or bilinear (default zoh)"),
    "season_length": (int, "naive model: repeat the last season of this many steps (default 1: the last value)"),
}


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="benchmark name (ETTh1, ETTh2, ETTm1, ETTm2, WTH, weather, ECL) or a CSV/Parquet path")
    p.add_argument("--data-dir", help="folder with the benchmark files (default: $TSESSM_DATA_DIR, datasets/, ../shared/datasets)")
    p.add_argument("--time-col", help="timestamp column of a CSV/Parquet file (default: date/time/timestamp/ds)")
    p.add_argument("--columns", help="comma-separated columns to use (default: all); e.g. OT for the univariate setting")


TRUST_PICKLE_HELP = ("also read model files that are pickles (tsessm 0.2 and older). A pickle runs the code it "
                     "holds while it loads: use this only for files from a source you trust, then save them again")


def _trust_pickle_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)


def _model_args(p: argparse.ArgumentParser, default_model: str | None = "essm") -> None:
    p.add_argument("--model", default=default_model,
                   help="essm | lstm | arima | naive, or (backtest/predict) a file written by `tsessm train`")
    p.add_argument("--target", help="column(s) to forecast, comma-separated (default: all columns)")
    p.add_argument("--horizon", type=int, default=24, help="steps forecast at once (default 24)")
    p.add_argument("--seed", type=int, default=0, help="random_state (default 0)")
    for name, (kind, text) in MODEL_FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, dest=name, default=None, help=text)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any other model parameter, e.g. --set n_heads=4 (repeatable)")


def _track_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", action=argparse.BooleanOptionalAction, default=True,
                   help="log the run to MLflow ($MLFLOW_TRACKING_URI, default sqlite:///mlruns.db)")
    p.add_argument("--experiment", default="tsessm", help="MLflow experiment name")


def build_parser() -> argparse.ArgumentParser:
    """The `tsessm` parser: light to build (every command's module loads its heavy parts when it runs)."""
    parser = argparse.ArgumentParser(
        prog="tsessm", description="Streaming time-series forecasting with eSSM.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="fit a model on the train split, absorb the rest of the file, save it")
    _data_args(p)
    _model_args(p)
    p.add_argument("--out", required=True, help="file to save the fitted model to")
    p.add_argument("--register", metavar="NAME", help="also log the model to MLflow and register it under NAME")
    p.add_argument("--alias", default="champion", help="alias the registered version gets (default champion)")
    _track_args(p)

    p = sub.add_parser("backtest", help="evaluate a model on the test split (windowed and/or one-pass)")
    _data_args(p)
    _model_args(p)
    _trust_pickle_arg(p)
    p.add_argument("--mode", choices=["windowed", "one-pass", "both"], default="windowed")
    p.add_argument("--plot", help="save a forecast/error-by-horizon PNG here")
    p.add_argument("--out", help="write the per-step metrics as CSV here")
    _track_args(p)

    p = sub.add_parser("predict", help="forecast from a saved model, optionally after absorbing new rows")
    p.add_argument("--model", required=True, help="a file written by `tsessm train`, or models:/NAME@alias")
    _trust_pickle_arg(p)
    p.add_argument("--update", help="CSV/Parquet of observations that follow the training data")
    p.add_argument("--time-col", help="timestamp column of the --update file")
    p.add_argument("--fh", help="comma-separated steps to return (default 1..horizon)")
    p.add_argument("--out", help="write the forecast as CSV here (default: print it)")
    p.add_argument("--save", help="save the updated model here (default: leave the file as it is)")

    p = sub.add_parser("demo", help="the main job: eSSM vs baselines on ETTh1 (univariate OT), table + plot",
                       description="Train the eSSM and the baselines on the Informer train split of a benchmark's "
                                   "univariate column, backtest them on its test split (windowed and one-pass), "
                                   "print the table, save a plot, log to MLflow. The default is the accuracy "
                                   "benchmark's cell at one horizon (about a minute on 2 idle cores); --full runs "
                                   "every horizon of the benchmark's protocol.")
    p.add_argument("--data", default="ETTh1", help="benchmark name (default ETTh1)")
    p.add_argument("--data-dir", help="folder with the benchmark files (default: $TSESSM_DATA_DIR, datasets/, "
                                      "../shared/datasets)")
    p.add_argument("--column", default="OT", help="univariate column (default OT)")
    p.add_argument("--horizon", type=int, default=24, help="steps forecast at once (default 24)")
    p.add_argument("--full", action="store_true",
                   help="every horizon of the benchmark's protocol (ETTh1: 24, 48, 168, 336, 720) instead of --horizon")
    p.add_argument("--lookback", type=int, default=96, help="rows each windowed forecast sees (default 96)")
    p.add_argument("--epochs", type=int, default=10, help="most training epochs of the neural models (default 10)")
    p.add_argument("--models", default="essm,lstm,arima,naive", help="comma-separated; unavailable ones are skipped with a note")
    p.add_argument("--out-dir", default="runs/demo", help="where the plot, table and models go")
    p.add_argument("--seed", type=int, default=0, help="random_state of the neural models (default 0)")
    _track_args(p)

    from tsessm.bench.command import add_bench_parser
    from tsessm.retrain import add_retrain_parser
    from tsessm.schedule import add_schedule_parser
    from tsessm.stream import add_stream_parser
    from tsessm.tune_cli import add_tune_parser

    add_stream_parser(sub)
    add_tune_parser(sub)
    add_retrain_parser(sub)
    add_schedule_parser(sub)
    add_bench_parser(sub)
    return parser


def _model_params(args: argparse.Namespace, name: str) -> dict[str, Any]:
    from tsessm.jobs import model_class, parse_value

    accepted = model_class(name)().get_params()
    params: dict[str, Any] = {"horizon": args.horizon, "random_state": args.seed, "verbose": 1}
    if args.target:
        targets = args.target.split(",")
        params["target"] = targets[0] if len(targets) == 1 else targets
    params.update({k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k) is not None})
    params = {k: v for k, v in params.items() if k in accepted}  # flags a model does not take are moot
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects NAME=VALUE, got {item!r}")
        params[key.strip()] = parse_value(value.strip())
    return params


def _open(args: argparse.Namespace, lookback: int):
    from tsessm.jobs import open_data

    columns = args.columns.split(",") if args.columns else None
    return open_data(args.data, lookback=lookback, columns=columns, data_dir=args.data_dir, time_col=args.time_col)


def _fitted_or_new(args: argparse.Namespace):
    """(model, needs_training): a saved file is loaded, a model name is built from the flags."""
    from tsessm.jobs import MODELS, make_model
    from tsessm.tracking import is_model_uri, load_forecaster

    if args.model not in MODELS:
        if not (is_model_uri(args.model) or Path(args.model).exists()):
            raise ValueError(f"--model {args.model!r} is neither a model name ({', '.join(MODELS)}), "
                             "a file nor an MLflow URI such as models:/NAME@champion")
        return load_forecaster(args.model, allow_pickle=getattr(args, "trust_pickle", False)), False
    return make_model(args.model, **_model_params(args, args.model)), True


def cmd_train(args: argparse.Namespace) -> None:
    from tsessm.distributed import distributed_context
    from tsessm.jobs import train
    from tsessm.tracking import start_run

    with distributed_context() as (rank, world, device):
        model, _ = _fitted_or_new(args)
        if device is not None and "device" in model.get_params():
            model.set_params(device=device)
        source = _open(args, getattr(model, "lookback", 1))
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
                    from tsessm.registry import promote

                    info = tracker.log_model(model, registered_model_name=args.register)
                    promote(args.register, info.registered_model_version, args.alias)
                    print(f"registered {args.register} version {info.registered_model_version} as @{args.alias}")
    if lead:
        print(f"trained {type(model).__name__} on {source.name} rows 0:{source.train_stop} in {seconds:.1f} s"
              f"{f' on {world} processes' if world > 1 else ''}, state advanced to the file's last row -> {args.out}")


def cmd_backtest(args: argparse.Namespace) -> None:
    from tsessm.jobs import evaluate, results_table, train
    from tsessm.plotting import plot_backtest
    from tsessm.tracking import start_run

    model, needs_training = _fitted_or_new(args)
    lookback = args.lookback or getattr(model, "lookback", 96)
    source = _open(args, lookback)
    modes = ["windowed", "one-pass"] if args.mode == "both" else [args.mode]
    with start_run(args.track, args.experiment, run_name=f"backtest-{type(model).__name__}") as tracker:
        if needs_training:
            train(model, source, tracker)
        rows, results = [], {}
        for mode in modes:
            result, seconds = evaluate(model, source, mode, lookback, tracker)
            results[f"{type(model).__name__} {mode}"] = result
            rows.append({"model": type(model).__name__, "mode": mode, **result.scores, "seconds": round(seconds, 2)})
            if args.out:
                result.by_step.assign(mode=mode).to_csv(args.out, mode="a" if len(rows) > 1 else "w",
                                                        header=len(rows) == 1, index=False)
        if args.plot:
            plot_backtest(results, args.plot)
            tracker.log_artifact(args.plot)
    print(results_table(rows).to_string(float_format="%.4f"))


def cmd_predict(args: argparse.Namespace) -> None:
    from tsessm.data import read_table
    from tsessm.tracking import load_forecaster

    model = load_forecaster(args.model, allow_pickle=args.trust_pickle)
    if args.update:
        model.update(read_table(args.update, time_col=args.time_col)[list(model.columns_)])
        if args.save:
            model.save(args.save)
    fh = [int(s) for s in args.fh.split(",")] if args.fh else None
    forecast = model.predict(fh=fh)
    if args.out:
        forecast.to_csv(args.out)
    else:
        print(forecast.to_string())


def cmd_demo(args: argparse.Namespace) -> None:
    from tsessm.demo import run_demo

    run_demo(args)


COMMANDS = {"train": cmd_train, "backtest": cmd_backtest, "predict": cmd_predict, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "bench":  # the benchmarks set their threads themselves (--threads)
        from tsessm.threads import choose_torch_threads

        choose_torch_threads()
    if args.command == "stream":
        from tsessm.stream import run_stream_command

        return run_stream_command(args)
    if args.command == "tune":
        from tsessm.tune_cli import run_tune_command

        return run_tune_command(args)
    if args.command == "retrain":
        from tsessm.retrain import run_retrain_command

        return run_retrain_command(args)
    if args.command == "schedule":
        from tsessm.schedule import run_schedule_command

        return run_schedule_command(args)
    if args.command == "bench":
        from tsessm.bench.command import run_bench_command

        return run_bench_command(args)
    try:
        COMMANDS[args.command](args)
    except Exception as exc:  # one line for the user; the traceback with --debug
        if args.debug:
            raise
        from sklearn.exceptions import NotFittedError

        from tsessm.errors import StreamingNotSupported
        from tsessm.persist import ModelFileError

        if isinstance(exc, ModelFileError):  # a damaged, foreign or pickled model file: a bad argument
            print(f"tsessm: error: {exc}".replace("\n", " "), file=sys.stderr)
            return 2
        if not isinstance(exc, (ValueError, TypeError, FileNotFoundError, NotFittedError,
                                StreamingNotSupported, FloatingPointError)):
            print(f"tsessm: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", file=sys.stderr)
            return 1
        print(mask(f"tsessm: error: {exc}"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
