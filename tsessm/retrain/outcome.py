"""What one retrain ends with: the exit codes, the `Outcome` and its printed line, and the
`RetrainError` a stage raises to stop the run."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from tsessm.redact import mask

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_BUSY = 0, 1, 2, 3


class RetrainError(Exception):
    """A run that cannot go on; `stage` says where (data, train, evaluate, promote, ...)."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass
class Outcome:
    """What one retrain did. status: promoted, not_promoted, skipped, dry_run, failed, busy, config_error."""

    name: str
    status: str
    reason: str
    exit_code: int
    stage: str | None = None  # where a failure happened
    run_id: str | None = None
    champion_before: int | None = None
    champion_after: int | None = None
    challenger_score: float | None = None
    champion_score: float | None = None
    data_sha256: str | None = None
    data_rows: int | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def line(self) -> str:
        """The one line printed for the run."""
        status = self.status.replace("_", " ")
        where = f"{self.stage}: " if self.status == "failed" and self.stage else ""
        return mask(f"retrain {self.name}: {status}: {where}{self.reason}")


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """An error message on one line, at most `limit` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Tag exceptions raised in the block with the stage they came from (the failed line names it)."""
    try:
        yield
    except RetrainError:
        raise
    except Exception as exc:
        if not hasattr(exc, "_retrain_stage"):
            with contextlib.suppress(Exception):
                exc._retrain_stage = name
        raise


def stage_of(exc: BaseException) -> str:
    """The stage `stage()` tagged `exc` with; "internal" for an exception from outside any stage."""
    return getattr(exc, "_retrain_stage", "internal")
