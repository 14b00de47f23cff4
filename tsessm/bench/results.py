"""The accuracy results CSV: one row per (cell, seed, backtest mode), rewritten atomically per cell."""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from filelock import FileLock

from tsessm.files import atomic_write_bytes

KEY = ["dataset", "setting", "horizon", "model", "seed"]
# Models whose fit depends on the seed: the benchmark runs them once per seed (the others once, as
# seed 0), and their seeds' forecasts can be averaged into an ensemble, a model named <name>_ens.
SEEDED_MODELS = ("essm", "lstm")
ENSEMBLE_SUFFIX = "_ens"


def result_row(cell: Any, mode: str, scores: dict[str, float], val: dict[str, float], lookback: int,
               params: dict[str, Any], commit: str, **extra: Any) -> dict[str, Any]:
    """One row of the results CSV: the cell, its seed and backtest mode, test and validation
    scores, the parameters and their fingerprint, the commit and the time; `extra` columns after."""
    return {
        "dataset": cell.dataset, "setting": cell.setting, "horizon": cell.horizon, "model": cell.model,
        "seed": cell.seed, "mode": mode, "mse": scores["mse"], "mae": scores["mae"], "n_windows": scores["n_windows"],
        "lookback": lookback, "val_mse": val["mse"], "val_mae": val["mae"], **extra,
        "params": json.dumps(params, sort_keys=True, default=str), "params_key": params_key(params),
        "commit": commit, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def params_key(params: dict[str, Any]) -> str:
    """A short stable fingerprint of a cell's parameters: a changed parameter reruns the cell."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class ResultsFile:
    """Reads and extends the results CSV; a finished cell is never lost to a crash mid-write."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def read(self) -> pd.DataFrame:
        if not self.path.exists():
            return pd.DataFrame(columns=KEY + ["mode", "mse", "mae", "params_key"])
        table = pd.read_csv(self.path, dtype={"params_key": str, "mlflow_run_id": str, "commit": str})
        if "seed" not in table.columns:  # rows from before seeds were a key: the seed is in the params
            table.insert(KEY.index("seed"), "seed", pd.Series(dtype=float))
        missing = table["seed"].isna()
        if missing.any():
            params = table["params"] if "params" in table.columns else pd.Series(None, index=table.index)
            table.loc[missing, "seed"] = [_seed_of(m, p) for m, p in zip(table.loc[missing, "model"],
                                                                       params[missing])]
        table["seed"] = table["seed"].astype(int)
        return table

    def has(self, cell: Any, key: str, modes: Iterable[str]) -> bool:
        """Whether every mode of `cell` is in the file with parameters fingerprinted `key`."""
        table = self.read()
        if table.empty:
            return False
        mine = table[self._mask(table, cell) & (table["params_key"] == key)]
        return set(modes) <= set(mine["mode"])

    def replace(self, cell: Any, rows: list[dict[str, Any]]) -> None:
        """Drop the cell's old rows (any parameters), append `rows`, write via temp file + rename.

        A lock file serialises writers, so several benchmark processes can share one CSV.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            self._replace(cell, rows)

    def _replace(self, cell: Any, rows: list[dict[str, Any]]) -> None:
        table = self.read()
        kept = table[~self._mask(table, cell)] if not table.empty else table
        new = pd.DataFrame(rows)
        out = new if kept.empty else pd.concat([kept, new], ignore_index=True)
        # a column the new rows leave empty (epochs_run of a model without epochs) is object-typed:
        # back to numbers, or "%.6g" skips it and the old rows' 10 becomes 10.0
        out = out.infer_objects()
        out = out.sort_values(KEY + ["mode"], kind="stable").reset_index(drop=True)
        atomic_write_bytes(self.path, out.to_csv(index=False, float_format="%.6g").encode())

    @staticmethod
    def _mask(table: pd.DataFrame, cell: Any) -> pd.Series:
        return ((table["dataset"] == cell.dataset) & (table["setting"] == cell.setting)
                & (table["horizon"].astype(int) == cell.horizon) & (table["model"] == cell.model)
                & (table["seed"].astype(int) == cell.seed))


def _seed_of(model: str, params: Any) -> int:
    """A row's seed from its parameters: 0 for the models run once, or where none is recorded."""
    if model not in SEEDED_MODELS or not isinstance(params, str):
        return 0
    return int(json.loads(params).get("random_state") or 0)
