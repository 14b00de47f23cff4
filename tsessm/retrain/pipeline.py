"""One retrain, start to end: take the model's lock, open an MLflow run, go through the stages
(data, skip?, champion, challenger, holdout, decision, promotion), and turn whatever happens into
an `Outcome` (see `tsessm retrain --help` for the stages and exit codes).
"""
from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from tsessm.redact import mask
from tsessm.retrain.config import ConfigError, RetrainConfig, load_config
from tsessm.retrain.data import DataError, load_data, rows_after
from tsessm.retrain.gate import CHAMPION, PREVIOUS, check_comparable, check_unmoved, decide, forecasts_finite, \
    holdout_score
from tsessm.retrain.outcome import EXIT_BUSY, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, Outcome, RetrainError, one_line, \
    stage, stage_of
from tsessm.retrain.report import last_completed, log_data, log_outcome, log_start, report_holdout, tag_version
from tsessm.retrain.signals import Interrupted, promotion_section
from tsessm.retrain.train import eval_lookback, score_holdout, train_challenger
from tsessm.tracking import start_run, tracking_uri

log = logging.getLogger("tsessm.retrain")


# ----- the run -----------------------------------------------------------------------------------
def lock_path(config: RetrainConfig) -> Path:
    """The lock file of `config`'s registered model (one retrain per model name at a time)."""
    return config.lock_dir / f"retrain-{config.registry_name}.lock"


class _EndAsFailed(Exception):
    """Raised inside the MLflow run so that it ends with status FAILED."""


def run_retrain(config: RetrainConfig | str | os.PathLike, *, force: bool = False, dry_run: bool = False) -> Outcome:
    """Run the pipeline once (see `tsessm retrain --help`); never raises for a failed run.

    force: retrain even if the data is unchanged or has too few new rows (the margin still gates).
    dry_run: train, compare and report, but leave the registry alone.
    """
    if not isinstance(config, RetrainConfig):
        try:
            config = load_config(config)
        except ConfigError as exc:
            return Outcome(name=Path(config).name, status="config_error", reason=str(exc), exit_code=EXIT_CONFIG)
    path = lock_path(config)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path), timeout=0)
        lock.acquire()
    except Timeout:
        return Outcome(config.registry_name, "busy", f"another retrain of {config.registry_name} is running "
                       f"(lock {path})", EXIT_BUSY)
    except OSError as exc:
        return Outcome(config.registry_name, "failed", f"cannot take the lock {path}: {one_line(exc)}",
                       EXIT_FAILED, stage="lock")
    try:
        return _run_locked(config, force=force, dry_run=dry_run)
    finally:
        lock.release()


def _run_locked(config: RetrainConfig, *, force: bool, dry_run: bool) -> Outcome:
    name = config.registry_name
    outcome: Outcome | None = None
    entered = False
    try:
        with start_run(True, config.experiment, run_name=f"retrain-{name}") as tracker:
            entered = True
            try:
                outcome = _pipeline(config, tracker, force=force, dry_run=dry_run)
            except RetrainError as exc:
                outcome = Outcome(name, "failed", one_line(exc, 500), EXIT_FAILED, stage=exc.stage)
            except FloatingPointError as exc:  # the trainer's divergence check
                outcome = Outcome(name, "failed", one_line(exc, 500), EXIT_FAILED, stage="train")
            except Interrupted as exc:
                outcome = Outcome(name, "failed", str(exc), 128 + exc.signum, stage="interrupted")
            except Exception as exc:
                outcome = Outcome(name, "failed", f"{type(exc).__name__}: {one_line(exc, 500)}", EXIT_FAILED,
                                  stage=stage_of(exc))
            outcome.run_id = tracker.run_id
            log_outcome(tracker, outcome)
            if not outcome.ok:
                raise _EndAsFailed
    except _EndAsFailed:
        pass
    except Interrupted as exc:  # while the run was being opened or closed
        if outcome is None or outcome.status != "promoted":
            outcome = Outcome(name, "failed", str(exc), 128 + exc.signum, stage="interrupted")
    except Exception as exc:
        if not entered:  # e.g. the tracking server is down: nothing was read, trained or changed
            outcome = Outcome(name, "failed", f"cannot start an MLflow run at {mask(tracking_uri())}: "
                              f"{_tracking_error(exc)}", EXIT_FAILED, stage="tracking")
        elif outcome is None:
            outcome = Outcome(name, "failed", f"lost the tracking server: {_tracking_error(exc)}", EXIT_FAILED,
                              stage="tracking")
        else:  # the run's report could not be written; what the registry holds is in the reason
            outcome.reason += f" (the report was not logged: {one_line(exc, 200)})"
            outcome.exit_code, outcome.status, outcome.stage = EXIT_FAILED, "failed", "tracking"
    return outcome


def _tracking_error(exc: BaseException) -> str:
    """MLflow's long HTTP errors, root cause first ("[Errno 111] Connection refused; API request ...")."""
    text = " ".join(str(exc).split())
    cause = re.search(r"\[Errno -?\d+\] [^\"'()\]]+", text)
    return f"{cause.group(0).strip()}; {one_line(text, 200)}" if cause else one_line(text, 300)


def _pipeline(config: RetrainConfig, tracker: Any, *, force: bool, dry_run: bool) -> Outcome:
    from tsessm import registry  # imports mlflow, which is heavy: only a run needs it

    name = config.registry_name
    log_start(tracker, config, dry_run)

    # -- data
    start = time.perf_counter()
    data = load_data(config)
    tracker.log_metrics({"load_seconds": time.perf_counter() - start})
    log_data(tracker, data)
    log.info("%s: %d rows up to %s from %s (sha256 %s)", name, data.rows, data.end,
             ", ".join(f.name for f in data.files), data.sha256[:12])
    base = dict(name=name, data_sha256=data.sha256, data_rows=data.rows)

    # -- skip? the same data, or too few new rows, since the last completed retrain
    with stage("tracking"):
        last = last_completed(tracker.run_id, name)
    if last is not None and not force:
        if last["sha256"] == data.sha256:
            return Outcome(status="skipped", exit_code=EXIT_OK, reason=(
                f"data unchanged since run {last['run_id']} (sha256 {data.sha256[:12]}, {data.rows} rows); "
                "nothing to do (--force retrains anyway)"), **base)
        new_rows = rows_after(data, last["end"])
        if new_rows < config.min_new_rows:
            return Outcome(status="skipped", exit_code=EXIT_OK, reason=(
                f"{new_rows} new row(s) since run {last['run_id']} (data up to {last['end']}); "
                f"min_new_rows is {config.min_new_rows}"), **base)
        tracker.log_params({"data.new_rows": new_rows})

    # -- rows: train on all but the holdout, compare on the holdout
    test_start = data.rows - config.holdout
    if test_start < 1:
        raise DataError(f"{data.rows} rows leave none for training with a holdout of {config.holdout}")

    # -- the champion (pinned to its version number: an alias move mid-run cannot change it)
    with stage("registry"):
        champion_version = registry.get_version(name, CHAMPION)
    champion = None
    if champion_version is not None:
        uri = f"models:/{name}/{champion_version}"
        try:
            champion = registry.load_forecaster(uri)
        except Exception as exc:
            raise RetrainError("champion", f"cannot load the champion {uri}: {one_line(exc, 300)}") from None
    base["champion_before"] = base["champion_after"] = champion_version
    tracker.set_tags({"retrain.champion_version_before": champion_version or "none"})

    # -- the challenger
    challenger, fit_seconds, tuned = train_challenger(config, data, test_start, tracker)
    tracker.log_metrics({"fit_seconds": fit_seconds})

    # -- the holdout comparison
    results, lookbacks = {}, {}
    with stage("evaluate"):
        lookbacks["challenger"] = eval_lookback(challenger, config)
        results["challenger"] = score_holdout(challenger, data, test_start, lookbacks["challenger"], "challenger")
    if not forecasts_finite(results["challenger"]):
        raise RetrainError("evaluate", "the challenger's holdout forecasts are not finite")
    challenger_score = holdout_score(results["challenger"], config.metric)
    champion_score = None
    if champion is not None:
        check_comparable(champion, challenger, champion_version)
        lookbacks["champion"] = eval_lookback(champion, config)
        with stage("evaluate"):
            results["champion"] = score_holdout(champion, data, test_start, lookbacks["champion"],
                                                f"champion v{champion_version}")
        champion_score = holdout_score(results["champion"], config.metric)
    base.update(challenger_score=challenger_score, champion_score=champion_score)
    report_holdout(tracker, config, results, lookbacks, champion_version, test_start, data)

    # -- the decision
    promote, reason = decide(challenger_score, champion_score, champion_version, metric=config.metric,
                             margin=config.margin)
    log.info("%s: %s", name, reason)
    # the challenger absorbs the holdout rows (no refit) so that it forecasts from the end of the data
    with stage("train"):
        challenger.update(data.frame.iloc[test_start:])
    with stage("tracking"):
        info = tracker.log_model(challenger, name="model")
    if tuned:
        tracker.set_tags({"retrain.tuned": "true"})
    if dry_run:  # not a completed retrain: the next real run does not count it as "the last one"
        return Outcome(status="dry_run", exit_code=EXIT_OK,
                       reason=f"would {'promote' if promote else 'not promote'}: {reason}", **base)
    if not promote:
        return Outcome(status="not_promoted", exit_code=EXIT_OK, reason=reason, **base)

    # -- promotion (the champion alias re-read first: someone may have moved it meanwhile)
    with stage("promote"):
        check_unmoved(champion_version, registry.get_version(name, CHAMPION))
        with promotion_section():
            version = registry.register_model(info.model_uri, name)
            tag_version(name, version, config, data, tracker.run_id, challenger_score, champion_version, reason)
            if champion_version is not None:
                registry.set_alias(name, PREVIOUS, champion_version)
            registry.set_alias(name, CHAMPION, version)
    base["champion_after"] = version
    after = f"; v{champion_version} is @{PREVIOUS}" if champion_version is not None else ""
    return Outcome(status="promoted", exit_code=EXIT_OK,
                   reason=f"version {version} is @{CHAMPION} ({reason}){after}", **base)
