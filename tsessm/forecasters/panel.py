"""PanelForecaster: one global neural model for many series, one recurrent state per series.

Long-format input (like `unique_id / ds / y`): an id column, a time column and value columns.
Every series is validated on its own and scaled by its own statistics; the net is trained on
windows from all of them. `update` steps every series that received an observation in one
batched call per time round, leaving the others untouched.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from tsessm import persist
from tsessm.data import as_offset, check_magnitudes, freq_name, resolve_target, same_freq, standard_stats, to_series
from tsessm.errors import StreamingNotSupported
from tsessm.forecasters.saved import MODEL_CLASSES, SavedModel
from tsessm.forecasters.neural import PREFILL_MIN_ROWS, NeuralForecaster, scaled_rows
from tsessm.intervals import Calibration, check_coverage
from tsessm.nn.state import concat_states, select_states, set_states


class PanelForecaster(SavedModel):
    """Global forecaster over a panel of series.

    Args:
        forecaster: an unfitted ESSMForecaster or LSTMForecaster: its parameters (horizon,
            target, lookback, net, training) are used for the global model.
        id_col, time_col: names of the series id and timestamp columns.
    """

    def __init__(self, forecaster: NeuralForecaster, id_col: str = "unique_id", time_col: str = "ds") -> None:
        self.forecaster = forecaster
        self.id_col = id_col
        self.time_col = time_col

    # ----- input -------------------------------------------------------------------------
    def _split(self, df: Any, name: str, freq: Any = None) -> tuple[dict[Any, Any], list[str], bool]:
        """Validate a long frame; returns ({id: Series}, value columns, was_polars)."""
        was_polars = type(df).__module__.startswith("polars")
        if was_polars:
            df = df.to_pandas()
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"{name} must be a pandas or polars DataFrame in long format, got {type(df).__name__}")
        for col in (self.id_col, self.time_col):
            if col not in df.columns:
                raise ValueError(f"{name} has no column {col!r} (id_col={self.id_col!r}, time_col={self.time_col!r})")
        if len(df) == 0:
            raise ValueError(f"{name} is empty")
        value_cols = [c for c in df.columns if c not in (self.id_col, self.time_col)]
        groups = {}
        for key, group in df.groupby(self.id_col, sort=False):
            frame = group.set_index(pd.DatetimeIndex(group[self.time_col], name=self.time_col))[value_cols]
            groups[key] = to_series(frame, missing=self.forecaster.missing, name=f"{name} series {key!r}", freq=freq)
        return groups, [str(c) for c in value_cols], was_polars

    # ----- fit ---------------------------------------------------------------------------
    def fit(self, df: Any) -> "PanelForecaster":
        """Train the global model on every series of the long frame `df`."""
        model = clone(self.forecaster)
        model.check_params()
        if model.future_covariates or model.calendar or getattr(model, "linear_skip", 0):
            raise ValueError("a panel does not take future_covariates, calendar features or linear_skip yet; fit "
                             "a single-series forecaster per series for them")
        if not model.can_stream:
            raise StreamingNotSupported("a panel keeps one recurrent state per series, which a bidirectional "
                                        "eSSM does not have; use bidirectional=False")
        groups, columns, was_polars = self._split(df, "df", freq=model.freq)
        targets = resolve_target(columns, model.target)
        need = model.min_rows()
        short = [k for k, s in groups.items() if len(s) < need]
        if short:
            raise ValueError(f"series {short[0]!r} has {len(groups[short[0]])} rows; at least {need} are needed")
        freqs = [(k, s.freq) for k, s in groups.items() if s.freq is not None]
        odd = [(k, f) for k, f in freqs if not same_freq(f, freqs[0][1])]
        if odd:
            raise ValueError(f"series have different frequencies: series {freqs[0][0]!r} steps by "
                             f"{freq_name(freqs[0][1])}, series {odd[0][0]!r} by {freq_name(odd[0][1])}; "
                             "pass freq= to the forecaster to set one")
        target_idx = [columns.index(t) for t in targets]
        segments, means, stds = [], [], []
        for series in groups.values():
            n_train = model.train_rows(len(series))
            mean, std = standard_stats(series.values[:n_train])
            means.append(mean)
            stds.append(std)
            segments.append((scaled_rows(series.values, mean, std), n_train))
        model.mean_, model.std_ = np.zeros(len(columns)), np.ones(len(columns))  # scaling is per series here
        model.fit_scaled(segments, target_idx)
        calibration = _calibrate(model, segments, target_idx)
        # a failed fit leaves the panel as it was
        self._transaction(self._set_fitted, model, groups, columns, targets, means, stds, was_polars, segments)
        self.calibration_ = calibration
        return self

    def _set_fitted(self, model, groups, columns, targets, means, stds, was_polars, segments) -> None:
        self.model_ = model
        self.ids_ = list(groups)
        self.columns_, self.target_columns_ = columns, targets
        self.freq_ = next(iter(groups.values())).freq
        self.mean_, self.std_ = np.stack(means), np.stack(stds)
        self.last_time_ = [s.index[-1] for s in groups.values()]
        self.polars_ = was_polars
        self.state_, self.last_out_ = None, None
        self._absorb_new({k: xs for k, (xs, _) in zip(self.ids_, segments)}, start=0)

    # ----- state -------------------------------------------------------------------------
    @torch.no_grad()
    def _absorb_new(self, scaled: dict[Any, np.ndarray], start: int) -> None:
        """Prefill the state of series ids_[start:] from their own (scaled) histories."""
        model = self.model_
        states, outs = [], []
        for key in self.ids_[start:]:
            out, state = model.absorb_scaled(scaled[key], None)
            states.append(state)
            outs.append(out[None])
        new_state = concat_states(states)
        new_out = torch.cat(outs)
        if self.state_ is None:
            self.state_, self.last_out_ = new_state, new_out
        else:
            self.state_ = concat_states([self.state_, new_state])
            self.last_out_ = torch.cat([self.last_out_, new_out])

    def update(self, df: Any) -> "PanelForecaster":
        """Absorb new observations (any subset of series; unknown ids bring their own history)."""
        check_is_fitted(self, "model_")
        groups, columns, _ = self._split(df, "df", freq=self.freq_)
        if sorted(columns) != sorted(self.columns_):
            raise ValueError(f"df value columns {columns} differ from the fitted ones {self.columns_}")
        step = as_offset(self.freq_)
        position = {k: i for i, k in enumerate(self.ids_)}
        known, new = {}, {}
        for key, series in groups.items():  # check everything before touching any state
            values = series.values[:, [columns.index(c) for c in self.columns_]]
            if key in position:
                expected = self.last_time_[position[key]] + step
                if series.index[0] != expected:
                    raise ValueError(
                        f"series {key!r}: new rows start at {series.index[0]}, expected {expected} "
                        f"(one step after its last observation {self.last_time_[position[key]]})"
                    )
                row = position[key]
                check_magnitudes(values, self.mean_[row], self.std_[row], self.columns_, series.index,
                                 f"series {key!r}")
                known[key] = (values, series.index[-1])
            elif len(series) < self.model_.lookback:
                raise ValueError(
                    f"series {key!r} is new: give at least lookback={self.model_.lookback} rows of its history "
                    f"to build its state (got {len(series)})"
                )
            else:
                mean, std = standard_stats(values, self.columns_)  # refuses what cannot be scaled
                new[key] = (values, series.index[-1], mean, std)
        # all or nothing: a failure while applying leaves every series as it was
        self._transaction(self._apply_update, known, new, position)
        return self

    def _apply_update(self, known: dict[Any, tuple], new: dict[Any, tuple], position: dict[Any, int]) -> None:
        self._step_known(known, position)
        if new:
            self._add_series(new)
        if not torch.isfinite(self.last_out_).all():
            raise ValueError("the forecasts after these rows are not finite (NaN or inf); the update is refused")

    def _snapshot(self) -> dict:
        """What `_transaction` restores, with copies of what `update` changes in place (lists, the
        forecast tensor)."""
        saved = dict(self.__dict__)
        if "model_" in saved:  # fitted
            for name in ("ids_", "last_time_"):
                saved[name] = list(saved[name])
            saved["last_out_"] = saved["last_out_"].clone()
        return saved

    def _add_series(self, new: dict[Any, tuple]) -> None:
        """New series with their histories and scalers: prefill their states."""
        start, scaled = len(self.ids_), {}
        for key, (values, last, mean, std) in new.items():
            scaled[key] = scaled_rows(values, mean, std)
            self.ids_.append(key)
            self.last_time_.append(last)
        self.mean_ = np.vstack([self.mean_, *(m for _, _, m, _ in new.values())])
        self.std_ = np.vstack([self.std_, *(s for _, _, _, s in new.values())])
        self._absorb_new(scaled, start)

    def observe(self, ids: Sequence[Any], times: Sequence[Any], values: np.ndarray) -> "PanelForecaster":
        """Fast path for streams: one new observation for each of `ids`, stepped in one batched call.

        times: their timestamps; values: (len(ids), n_columns) in `columns_` order. Checked in
        bulk (known ids, no repeats, one step after each series' last time, finite values)
        before any state changes.
        """
        check_is_fitted(self, "model_")
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(ids), len(self.columns_)) or len(times) != len(ids):
            raise ValueError(f"observe needs {len(ids)} times and values shaped ({len(ids)}, {len(self.columns_)}), "
                             f"got {len(times)} times and {values.shape}")
        position = {k: i for i, k in enumerate(self.ids_)}
        unknown = [k for k in ids if k not in position]
        if unknown:
            raise ValueError(f"unknown series id {unknown[0]!r}: add it with update(history)")
        rows = np.array([position[k] for k in ids])
        if len(np.unique(rows)) != len(rows):
            raise ValueError("observe got two observations for one series; use update for chunks")
        bad = ~np.isfinite(values)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"series {ids[r]!r}: column {self.columns_[c]!r} is {values[r, c]}")
        check_magnitudes(values, self.mean_[rows], self.std_[rows], self.columns_,
                         _Labels(lambda r: f"{times[r]} of series {ids[r]!r}"), "observe")
        times = pd.DatetimeIndex(times)
        step = as_offset(self.freq_)
        expected = pd.DatetimeIndex([self.last_time_[i] + step for i in rows])
        wrong = np.flatnonzero(times != expected)
        if len(wrong):
            r = wrong[0]
            raise ValueError(f"series {ids[r]!r}: observation at {times[r]}, expected {expected[r]}")
        with torch.no_grad():
            x_t = scaled_rows(values, self.mean_[rows], self.std_[rows])
            out, state = self._engine_round(rows, x_t)
            if not np.isfinite(out).all():
                raise ValueError("the forecasts after these observations are not finite (NaN or inf); "
                                 "they are refused and the panel is unchanged")
            self._set_round(rows, out, state)
        for i, t in zip(rows, times):
            self.last_time_[i] = t
        return self

    @torch.no_grad()
    def _step_known(self, known: dict[Any, tuple[np.ndarray, Any]], position: dict[Any, int]) -> None:
        """Advance known series: long chunks by prefill, the rest in batched rounds of `step`."""
        rows = {k: position[k] for k in known}
        chunks = {k: scaled_rows(v, self.mean_[rows[k]], self.std_[rows[k]]) for k, (v, _) in known.items()}
        for key in [k for k, x in chunks.items() if len(x) >= PREFILL_MIN_ROWS]:
            i = rows[key]
            self.last_out_[i], state = self.model_.absorb_scaled(chunks.pop(key), select_states(self.state_, [i]))
            self.state_ = set_states(self.state_, [i], state)
        for r in range(max((len(x) for x in chunks.values()), default=0)):
            active = [k for k, x in chunks.items() if len(x) > r]
            idx = np.array([rows[k] for k in active])
            self._set_round(idx, *self._engine_round(idx, np.stack([chunks[k][r] for k in active])))
        for key, (_, last) in known.items():
            self.last_time_[rows[key]] = last

    def _engine_round(self, rows: np.ndarray, x_t: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """One batched step of the series at `rows` (scaled rows x_t (n, C) float32) through the
        model's numpy engine: (their new forecasts (n, H, k), their new states). Changes nothing."""
        state = [s.cpu().numpy() for s in select_states(self.state_, rows)]
        return self.model_.step_scaled(x_t, state)

    def _set_round(self, rows: np.ndarray, out: np.ndarray, state: list[np.ndarray]) -> None:
        device = self.model_.device_
        self.state_ = set_states(self.state_, rows, [torch.as_tensor(s, device=device) for s in state])
        self.last_out_[rows] = torch.as_tensor(out, device=device)

    # ----- predict -----------------------------------------------------------------------
    def predict_interval(self, ids: Sequence[Any] | None = None, fh: Sequence[int] | None = None,
                         coverage: float = 0.9) -> Any:
        """Long-format intervals: predict's rows with "<target>-lo-<pct>" and "<target>-hi-<pct>"
        columns, split-conformal from the fit's held-out tails (residuals pooled over the series
        in their own scale, then scaled back per series)."""
        calibration = getattr(self, "calibration_", None)
        if calibration is None:
            raise ValueError("this panel has no calibration for intervals: its series held out no rows "
                             "(set validation_fraction so the tails are longer than the horizon)")
        frame = self.predict(ids, fh)
        was_polars = not isinstance(frame, pd.DataFrame)
        frame = frame.to_pandas() if was_polars else frame
        steps = self.model_.resolve_fh(fh)
        position = {k: i for i, k in enumerate(self.ids_)}
        rows = np.array([position[k] for k in frame[self.id_col]])
        step_of = np.tile(steps, len(frame) // len(steps)) - 1
        half = calibration.half_width(check_coverage(coverage))  # (H, k) scaled
        pct = f"{100 * coverage:g}"
        for j, name in enumerate(self.target_columns_):
            width = half[step_of, j] * self.std_[rows, self.model_.target_idx_[j]]
            frame[f"{name}-lo-{pct}"] = frame[name] - width
            frame[f"{name}-hi-{pct}"] = frame[name] + width
        if was_polars:
            import polars as pl

            return pl.from_pandas(frame)
        return frame

    def predict(self, ids: Sequence[Any] | None = None, fh: Sequence[int] | None = None) -> Any:
        """Long-format forecasts: one row per (series, step) with the id, time and target columns."""
        check_is_fitted(self, "model_")
        steps = self.model_.resolve_fh(fh)
        position = {k: i for i, k in enumerate(self.ids_)}
        ids = list(self.ids_) if ids is None else list(ids)
        unknown = [k for k in ids if k not in position]
        if unknown:
            raise ValueError(f"unknown series id {unknown[0]!r}")
        idx = [position[k] for k in ids]
        out = self.last_out_[idx].cpu().numpy()[:, steps - 1]  # (n, len(fh), k) scaled
        t = self.model_.target_idx_
        values = out * self.std_[idx][:, None, t] + self.mean_[idx][:, None, t]
        step = as_offset(self.freq_)
        frame = pd.DataFrame({
            self.id_col: np.repeat(ids, len(steps)),
            self.time_col: [self.last_time_[i] + s * step for i in idx for s in steps],
        })
        for j, name in enumerate(self.target_columns_):
            frame[name] = values[..., j].ravel()
        if self.polars_:
            import polars as pl

            return pl.from_pandas(frame)
        return frame

    # ----- persistence (`save` and `load` are SavedModel's) ---------------------------------
    def _document(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k.endswith("_") and k != "model_"}
        state["state_"] = [s.cpu() for s in self.state_]
        state["last_out_"] = self.last_out_.cpu()
        return {"class": "PanelForecaster", "params": {"id_col": self.id_col, "time_col": self.time_col},
                "model": self.model_._document(), "state": state}

    @classmethod
    def _from_document(cls, document: dict, **overrides: Any) -> "PanelForecaster":
        inner = document["model"]
        inner_cls = MODEL_CLASSES.get(inner.get("class"))
        if inner_cls is None or not issubclass(inner_cls, NeuralForecaster):
            raise persist.ModelFileError(f"not a tsessm panel model file (inner model {inner.get('class')!r})")
        model = inner_cls._from_document(inner)
        panel = cls(clone(model), **document["params"])
        panel.__dict__.update(document["state"])
        panel.model_ = model
        panel.state_ = [s.to(model.device_) for s in panel.state_]
        panel.last_out_ = panel.last_out_.to(model.device_)
        return panel


class _Labels:
    """Row labels built only when an error message asks for one."""

    def __init__(self, label) -> None:
        self.label = label

    def __getitem__(self, row: int) -> str:
        return self.label(row)


def _calibrate(model: NeuralForecaster, segments: list[tuple[np.ndarray, int]], target_idx: list[int]
               ) -> Calibration | None:
    """Residuals of one-pass forecasts on every series' held-out tail, in the series' own scale."""
    H, residuals = model.horizon, []
    for xs, n_train in segments:
        origins = np.arange(max(n_train - 1, 0), len(xs) - H)
        if len(origins):
            forecasts = model.one_pass_scaled(xs, origins)
            actual = xs[origins[:, None] + np.arange(1, H + 1)][..., target_idx]
            residuals.append(actual - forecasts)
    return Calibration.from_residuals(np.concatenate(residuals)) if residuals else None
