"""Run the retrain pipeline on a cron schedule (APScheduler), until SIGINT/SIGTERM.

    tsessm schedule --cron "0 3 * * *" --config retrain.toml      # every night at 03:00
    tsessm schedule --cron "*/10 * * * * *" --config retrain.toml --run-now --max-runs 3

Each run is a child process (`python -m tsessm.retrain --config ...`, the same as `tsessm
retrain`), so a crash, a leak or a hung run cannot take the scheduler down, and the config is
read afresh every time. A failed run is logged and the schedule goes on. Runs never overlap: a
run still going when the next one is due makes the scheduler skip that one.

--cron takes the five crontab fields (minute hour day month day-of-week, with cron's day-of-week
numbering: 0 and 7 are Sunday), an @hourly/@daily/@weekly/@monthly/@yearly macro, or six fields
with seconds first ("*/5 * * * * *": every 5 seconds). Times are in --timezone (default: the
machine's).

SIGINT/SIGTERM stop the scheduler: a run under way gets SIGTERM (it ends as "interrupted", its
MLflow run marked FAILED, a promotion already under way finishing first) and --grace seconds to
exit before it is killed. Exit status: 0 after a clean stop; with --max-runs, 1 if any run failed;
2 for an invalid --cron or config.
"""
from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from tsessm.scripts import run_script

log = logging.getLogger("tsessm.schedule")

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
_CRON_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]  # cron numbering: 0 (and 7) = Sunday


def _cron_day_of_week(field: str) -> str:
    """A crontab day-of-week field for APScheduler, whose numbers start at Monday (0 = mon):
    numbers are turned into day names (cron's 0 and 7 = sun); names and * pass through."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"day-of-week step must be >= 1 in {field!r}")
        if body == "*":
            low, high = 0, 6
        else:
            first, dash, last = body.partition("-")
            low = _day_number(first, field)
            high = _day_number(last, field) if dash else (6 if step_text else low)
            if dash and high == 0 and low > 0:  # "5-0" / "fri-sun": to Sunday at the end of the week
                high = 7
            if high < low:
                raise ValueError(f"day-of-week range {body!r} runs backwards in {field!r}")
        days.update(d % 7 for d in range(low, high + 1, step))
    return ",".join(_CRON_DAYS[d] for d in sorted(days, key=lambda d: (d - 1) % 7))


def _day_number(text: str, field: str) -> int:
    if text in _CRON_DAYS:
        return _CRON_DAYS.index(text)
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    raise ValueError(f"bad day of week {text!r} in {field!r} (0-7 or sun..sat)")


def parse_cron(expr: str, timezone: Any = None) -> Any:
    """An APScheduler CronTrigger from a crontab expression (5 fields, a macro, or 6 with seconds first)."""
    from apscheduler.triggers.cron import CronTrigger  # apscheduler loads only when a schedule is read

    text = MACROS.get(expr.strip().lower(), expr)
    fields = text.split()
    if len(fields) not in (5, 6):
        raise ValueError(f"--cron needs 5 fields (minute hour day month day-of-week), 6 with seconds first, "
                         f"or a macro ({', '.join(MACROS)}); got {expr!r}")
    second = fields.pop(0) if len(fields) == 6 else "0"
    minute, hour, day, month, dow = fields
    if day not in ("*", "?") and dow not in ("*", "?"):
        raise ValueError(f"{expr!r} restricts both day-of-month and day-of-week: cron runs when either "
                         "matches, APScheduler only when both do; restrict one of them")
    try:
        dow = _cron_day_of_week(dow)
        if second == "0":
            return CronTrigger.from_crontab(" ".join([minute, hour, day, month, dow]), timezone=timezone)
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=dow,
                           timezone=timezone)
    except ValueError as exc:
        raise ValueError(f"invalid --cron {expr!r}: {exc}") from None


class RetrainScheduler:
    """A BlockingScheduler whose one job runs `python -m tsessm.retrain --config CONFIG` in a child."""

    def __init__(self, config: str | Path, trigger: Any, *, max_runs: int | None = None, run_now: bool = False,
                 run_timeout: float | None = None, grace: float = 30.0, timezone: Any = None,
                 retrain_args: Sequence[str] = ()) -> None:
        self.config = str(config)
        self.trigger = trigger
        self.max_runs = max_runs
        self.run_now = run_now
        self.run_timeout = run_timeout
        self.grace = grace
        self.timezone = timezone
        self.retrain_args = list(retrain_args)
        self.runs = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._child: subprocess.Popen | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False
        self._scheduler: Any = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tsessm.retrain", "--config", self.config, *self.retrain_args]

    # -- the job ------------------------------------------------------------------------------
    def job(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._idle.clear()
            number = self.runs + 1
        started = time.monotonic()
        rc: int | None = None
        try:
            with self._lock:
                if self._stopping:  # stopped while this run was being set up: it never starts
                    self._idle.set()
                    return
                log.info("run %d: %s", number, " ".join(self.command()))
                self._child = subprocess.Popen(self.command())
            try:
                rc = self._child.wait(timeout=self.run_timeout)
            except subprocess.TimeoutExpired:
                log.error("run %d: still running after --run-timeout %ss; stopping it", number, self.run_timeout)
                rc = self._end_child(self._child)
        except Exception as exc:  # e.g. the interpreter cannot be started: log, keep the schedule
            log.error("run %d could not run: %s: %s", number, type(exc).__name__, exc)
            rc = -1
        finally:
            if self._idle.is_set():  # never started
                return
            with self._lock:
                self._child = None
                self.runs += 1
                if rc != 0:
                    self.failures += 1
                done = self.max_runs is not None and self.runs >= self.max_runs
            seconds = time.monotonic() - started
            if rc == 0:
                log.info("run %d finished in %.1f s (exit 0)", number, seconds)
            else:
                log.error("run %d failed in %.1f s (exit %s)%s", number, seconds, rc,
                          "" if done or self._stopping else "; the schedule goes on")
            self._idle.set()
            if done:
                self.stop(f"--max-runs {self.max_runs} reached")
            elif not self._stopping:
                self._log_next()

    def _end_child(self, child: subprocess.Popen) -> int:
        """SIGTERM, --grace seconds, then SIGKILL; returns the exit status."""
        if child.poll() is None:
            child.terminate()
            try:
                return child.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                log.error("run did not stop within --grace %ss; killing it", self.grace)
                child.kill()
        return child.wait()

    def _log_next(self) -> None:
        job = self._scheduler.get_job("retrain") if self._scheduler is not None else None
        if job is not None and job.next_run_time is not None:
            log.info("next run at %s", job.next_run_time.isoformat())

    # -- start / stop ------------------------------------------------------------------------
    def stop(self, why: str) -> None:
        """Stop scheduling (from a signal handler, a job thread or the caller); a run under way gets SIGTERM."""
        with self._lock:
            first = not self._stopping
            self._stopping = True
            child = self._child
        if first:
            log.info("stopping: %s", why)
        if child is not None and child.poll() is None and why.startswith("SIG"):
            child.send_signal(signal.SIGTERM if first else signal.SIGKILL)  # a second signal: no more waiting
        scheduler = self._scheduler
        if scheduler is not None and scheduler.running:
            try:
                scheduler.shutdown(wait=False)
            except Exception:  # already shut down (two signals at once)
                pass

    def _on_event(self, event: Any) -> None:
        """APScheduler's own warnings, in one short line each."""
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES  # apscheduler loads only when scheduling

        times = getattr(event, "scheduled_run_times", None) or [getattr(event, "scheduled_run_time", None)]
        due = times[-1].isoformat(timespec="seconds") if times[-1] is not None else "?"
        if event.code == EVENT_JOB_MAX_INSTANCES:
            log.warning("run due at %s skipped: run %d is still going", due, self.runs + 1)
        else:
            log.warning("run due at %s missed (the scheduler was busy or the machine asleep)", due)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop(signal.Signals(signum).name)

    def run(self) -> int:
        """Schedule and block until stopped; returns the exit status."""
        # apscheduler loads only when scheduling: `tsessm --help` builds this command's parser without it
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
        from apscheduler.schedulers.blocking import BlockingScheduler

        scheduler = BlockingScheduler(timezone=self.timezone) if self.timezone else BlockingScheduler()
        self._scheduler = scheduler
        extra = {"next_run_time": datetime.now(scheduler.timezone)} if self.run_now else {}
        scheduler.add_listener(self._on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        scheduler.add_job(self.job, self.trigger, id="retrain", name=f"retrain {self.config}", max_instances=1,
                          coalesce=True, misfire_grace_time=300, **extra)
        restore = self._install_signals()
        try:
            log.info("scheduling %s with %s%s", " ".join(self.command()), self.trigger,
                     "; first run now" if self.run_now else "")
            if not self._stopping:
                scheduler.start()  # blocks until shutdown (a signal, or --max-runs)
            if not self._idle.wait(timeout=0 if self._child is None else self.grace + 5):
                with self._lock:
                    child = self._child
                if child is not None and child.poll() is None:
                    log.error("the run under way did not stop within %ss; killing it", self.grace)
                    child.kill()
                self._idle.wait(timeout=10)
        finally:
            restore()
        log.info("stopped after %d run(s), %d failed", self.runs, self.failures)
        if self.max_runs is not None and self.runs >= self.max_runs:
            return 1 if self.failures else 0
        return 0

    def _install_signals(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


# ----- command line ------------------------------------------------------------------------------
def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cron", required=True,
                   help='crontab expression, e.g. "0 3 * * *"; 6 fields = seconds first ("*/5 * * * * *")')
    p.add_argument("--config", required=True, help="the retrain TOML file")
    p.add_argument("--run-now", action="store_true", help="also run once right away")
    p.add_argument("--max-runs", type=int, help="stop after this many runs (exit 1 if any failed)")
    p.add_argument("--timezone", help="time zone of the cron expression (default: the machine's), e.g. UTC")
    p.add_argument("--run-timeout", type=float, help="stop a run (SIGTERM, then SIGKILL) after this many seconds")
    p.add_argument("--grace", type=float, default=30.0,
                   help="seconds a run gets to exit after SIGTERM before it is killed (default 30)")
    p.add_argument("--force", action="store_true", help="pass --force to every run")


def add_schedule_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `schedule` on the `tsessm` sub-command parsers; dispatch with run_schedule_command(args)."""
    p = subparsers.add_parser("schedule", help="run `tsessm retrain` on a cron schedule until SIGINT/SIGTERM",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return p


def run_schedule_command(args: argparse.Namespace) -> int:
    """Run `tsessm schedule` from parsed arguments; returns the exit status."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)
    log.setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # our own lines say what ran, skipped or missed
    # the config check imports the forecasters (torch): `tsessm --help` builds this parser without them
    from tsessm.retrain.config import load_config

    try:
        if args.max_runs is not None and args.max_runs < 1:
            raise ValueError("--max-runs must be >= 1")
        trigger = parse_cron(args.cron, timezone=args.timezone)
        load_config(args.config)  # fail now, not at 03:00; every run reads it again
    except ValueError as exc:  # a ConfigError is a ValueError
        print(f"tsessm schedule: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. an unknown time zone
        print(f"tsessm schedule: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    scheduler = RetrainScheduler(Path(args.config).resolve(), trigger, max_runs=args.max_runs, run_now=args.run_now,
                                 run_timeout=args.run_timeout, grace=args.grace, timezone=args.timezone,
                                 retrain_args=["--force"] if args.force else [])
    return scheduler.run()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tsessm.schedule --cron ... --config ...` (what `tsessm schedule` runs)."""
    return run_script("tsessm schedule", __doc__, _add_arguments, run_schedule_command, argv)


if __name__ == "__main__":
    sys.exit(main())
