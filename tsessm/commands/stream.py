"""`tsessm stream`: run a trained model online over a stream of observations, with checkpoints.

The parser is light (argparse only); the runner, pandas and torch load when the command runs.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from tsessm.checks import positive_float_arg, positive_int_arg
from tsessm.commands import options
from tsessm.commands.errors import UsageError, print_error

NAME = "stream"
HELP = "run a trained model online over a stream of observations, with checkpoints"
PROG = "tsessm stream"

DESCRIPTION = """\
Run a trained model online: read observations (CSV with a header, or JSON lines) from a file
or stdin, update the model's state with each one and write its forecast as a JSON line:
  {"id": <id or null>, "time": "<time of the observation>", "forecast": {"<target>": [v_1, ..., v_H]}}
Checkpoints (model state + input position + counters) go to --checkpoint; rerunning the same
command resumes from there. Delivery is at-least-once: after a crash some lines may repeat,
identical, so deduplicate by (id, time)."""

EPILOG = """\
example: pipe the new rows of a CSV through a trained model
  tsessm train history.csv --time-col time --target load --horizon 24 --out model.tsm --no-track
  cat new_rows.csv | tsessm stream --model model.tsm --input - --checkpoint ckpt/ > forecasts.jsonl

  new_rows.csv (the model's columns by name, then one row per step after history.csv):
    time,load,temp
    2024-01-13T12:00:00,1.27,0.31
    2024-01-13T13:00:00,1.30,0.35
  forecasts.jsonl, one line per row:
    {"id": null, "time": "2024-01-13T12:00:00", "forecast": {"load": [1.29, 1.31, ...]}}

more:
  tsessm stream --model model.tsm --input new_rows.csv --output forecasts.jsonl --checkpoint ckpt/
      # a file input resumes at the line after the last checkpoint when rerun
  tsessm stream --model model.tsm --input live.csv --follow --checkpoint ckpt/ --gap ffill
      # follow a growing file until SIGINT/SIGTERM (a clean stop writes a checkpoint)
  producer | tsessm stream --model model.tsm --input - --id-col sensor --checkpoint ckpt/ --on-bad-record skip
      # JSON lines such as {"sensor": "a", "time": "2024-01-13T12:00:00", "load": 1.27, "temp": 0.31}
  tsessm stream --model panel.tsm --id-col sensor --checkpoint ckpt0/ --partition 0/2 \
      --input 'redis://127.0.0.1:6379/0?stream=obs&partitions=4&group=fcst' \
      --output 'redis://127.0.0.1:6379/0?stream=forecasts'
      # runner 0 of 2 over a Redis stream partitioned by series id (obs:0..obs:3, see
      # tsessm.stream.broker.publish); entries are acknowledged after the checkpoint that includes
      # them, and a restart re-reads its pending ones first. Runner 1 runs with --partition 1/2.
  tsessm stream --model models:/load-essm@champion --reload-every 5m --input live.csv --follow --checkpoint ckpt/
      # hand over to a newly promoted champion without losing the stream position: every 5 minutes
      # the alias is resolved; a new version absorbs the last --history-rows observations after the
      # end of its data, then replaces the serving model (one stderr line, a checkpoint at once).
      # A version it cannot bring exactly to the stream position is refused with a warning.

exit status: 0 at the end of the input (or a clean stop), 1 when a bad record or a gap stops the
stream (the message names the input line), 2 for bad arguments, a missing model or an
unusable checkpoint."""

# Test-only: seconds to sleep before each record, so a test can kill the runner mid-stream.
TEST_DELAY_ENV = "TSESSM_STREAM_TEST_DELAY"


def duration_arg(text: str) -> float:
    """`type=` for --reload-every: 30s, 5m, 1h30m ... as seconds."""
    from tsessm.stream.reload import parse_duration  # reload loads pandas: only when the flag is given

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `stream` options to a parser."""
    p.add_argument("--model", required=True, metavar="PATH",
                   help="a model file written by `tsessm train` / save(), or models:/NAME@alias (not read when resuming from --checkpoint)")
    p.add_argument("--input", required=True, metavar="PATH|-|URL",
                   help="CSV with a header or JSON lines; - reads stdin; redis://HOST:PORT/DB?stream=KEY reads "
                        "a Redis stream in a consumer group (see --partition)")
    p.add_argument("--output", default="-", metavar="PATH|-|URL",
                   help="where the JSON lines go: - for stdout (default), a file (appended to), or "
                        "redis://HOST:PORT/DB?stream=KEY (one entry per line: id, time, data)")
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="checkpoint directory; an existing checkpoint there is resumed")
    p.add_argument("--checkpoint-every", type=positive_int_arg, default=100, metavar="N",
                   help="checkpoint after every N observations applied (default 100), and at the end")
    p.add_argument("--time-col", default="time", metavar="NAME", help="the time field, ISO 8601 (default: time)")
    p.add_argument("--id-col", metavar="NAME", help="the series id field (default: no id; output id is null)")
    p.add_argument("--gap", choices=["error", "ffill"], default="error",
                   help="a time more than one step after the last: stop (error, default) or apply the last "
                        "values for the missing steps first (ffill; their lines carry \"filled\": true)")
    p.add_argument("--coverage", type=float, metavar="C",
                   help="add the prediction interval of coverage C (e.g. 0.9) to every line as "
                        '"interval": {target: {"lo": [...], "hi": [...]}}, recalibrated online as values arrive')
    p.add_argument("--max-fill", type=positive_int_arg, metavar="N",
                   help="with --gap ffill: the most missing steps one gap may fill (default: the model's horizon); "
                        "a longer gap is a bad record, so a mistyped timestamp cannot fill a year")
    options.add_trust_pickle_arg(p)
    p.add_argument("--on-bad-record", choices=["error", "skip"], default="error",
                   help="a malformed record: stop with exit 1 (error, default) or report it and go on (skip)")
    p.add_argument("--emit-every", type=positive_int_arg, default=1, metavar="N",
                   help="write the forecast after every N-th observation of a series (default 1)")
    p.add_argument("--follow", action="store_true",
                   help="at the end of an --input file, wait for more lines until SIGINT/SIGTERM")
    p.add_argument("--idle-timeout", type=positive_float_arg, metavar="SECONDS",
                   help="with --follow: stop cleanly after this long without a new line")
    p.add_argument("--format", choices=["auto", "csv", "jsonl"], default="auto",
                   help="input format (default auto: by file extension, else a first line starting with { is JSON lines)")
    broker = p.add_argument_group("broker input (--input redis://...; these override the URL's parameters)")
    broker.add_argument("--group", metavar="NAME", help="the consumer group (default tsessm)")
    broker.add_argument("--consumer", metavar="NAME",
                        help="this runner's consumer name (default <host>-runner-I); keep it across restarts")
    broker.add_argument("--partitions", type=positive_int_arg, metavar="P",
                        help="the producer's partition streams KEY:0..KEY:P-1 (default 1: KEY itself)")
    broker.add_argument("--partition", metavar="I/N",
                        help="this runner is I of N (from 0): it owns the partitions p with p %% N == I (default 0/1)")
    p.add_argument("--reload-every", type=duration_arg, metavar="DURATION",
                   help="with --model models:/NAME@alias: every DURATION (30s, 5m, 1h; checked between records) "
                        "look up the alias and hand over to a newly promoted version at the current position")
    p.add_argument("--history-rows", type=positive_int_arg, default=1000, metavar="N",
                   help="with --reload-every: observations kept per series to bring a new version up to the "
                        "stream position (default 1000); a version whose data ends further back is refused")
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    return configure_parser(p)


def run(args: argparse.Namespace) -> int:
    """0 at the end of the input or a clean stop; 1 when a bad record or a gap stops the stream;
    a stream that cannot start (bad arguments, a missing model, an unusable checkpoint) is a UsageError."""
    from tsessm.stream.broker import is_broker_url, parse_part  # light: redis loads only for a broker URL

    broker_in = is_broker_url(args.input)
    if args.idle_timeout is not None and not (args.follow or broker_in):
        raise UsageError("--idle-timeout needs --follow or a broker --input")
    given = [f"--{k}" for k in ("group", "consumer", "partitions", "partition") if getattr(args, k) is not None]
    if given and not broker_in:
        raise UsageError(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} a broker --input (redis://...)")
    if args.partition is not None:
        try:
            parse_part(args.partition)
        except ValueError as exc:
            raise UsageError(f"--partition: {exc}") from None
    try:
        delay = float(os.environ.get(TEST_DELAY_ENV) or 0)
    except ValueError:
        delay = 0.0
    # the runner loads pandas and torch: only when the command runs
    from tsessm.stream.runner import StreamSetupError, run_stream
    from tsessm.stream.sources import open_source

    try:
        output = args.output
        try:
            if broker_in:
                from tsessm.stream.broker import RedisStreamSource

                source = RedisStreamSource(args.input, group=args.group, consumer=args.consumer,
                                           partitions=args.partitions, part=args.partition,
                                           idle_timeout=args.idle_timeout)
            else:
                source = open_source(args.input, fmt=args.format, follow=args.follow, idle_timeout=args.idle_timeout)
            if is_broker_url(output):
                from tsessm.stream.broker import RedisStreamSink

                output = RedisStreamSink(output)
        except (OSError, ValueError) as exc:
            raise StreamSetupError(str(exc)) from None
        result = run_stream(
            args.model, source, output, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
            time_col=args.time_col, id_col=args.id_col, gap=args.gap, on_bad_record=args.on_bad_record,
            emit_every=args.emit_every, handle_signals=True, record_delay=delay,
            reload_every=args.reload_every, history_rows=args.history_rows,
            max_fill=args.max_fill, trust_pickle=args.trust_pickle, coverage=args.coverage,
        )
    except StreamSetupError as exc:
        raise UsageError(str(exc)) from exc
    if result.status == "output_closed" and args.output == "-":
        # Keep Python's exit-time flush of a closed stdout quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    if result.exit_code:
        print_error(PROG, result.message or result.status)
        return result.exit_code
    c, total = result.run_counters, result.counters
    how = {"end": "end of input", "stopped": "stopped", "idle": "idle timeout"}.get(result.status, result.status)
    totals = (f" (since the checkpoint began: {total.applied} applied, {total.emitted} lines written)"
              if result.resumed else "")
    print(f"tsessm stream: {how}{' (resumed)' if result.resumed else ''}: this run {c.applied} applied, {c.filled} "
          f"filled, {c.duplicates} replays skipped, {c.bad} bad records, {c.emitted} lines written{totals}; "
          f"checkpoint at input line {result.line} in {args.checkpoint}"
          + (f"; model version {result.model_version}" if result.model_version is not None else "")
          + (f" ({len(result.switches)} hand-over{'s' if len(result.switches) != 1 else ''})"
             if result.switches else ""), file=sys.stderr, flush=True)
    return 0


