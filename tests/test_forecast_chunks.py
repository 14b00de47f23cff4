"""Backtest and validation forecasts of the neural forecasters are made in bounded pieces.

A long horizon on a long multivariate series would otherwise hold T x H x k forecasts at once
(ETTm1 M at H=672 ran out of 24 GB). The pieces must give the forecasts of one whole pass.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tsessm import ESSMForecaster, LSTMForecaster
from tsessm.forecasters import neural

H, LOOKBACK, T = 5, 12, 260
SMALL = dict(horizon=H, lookback=LOOKBACK, d_model=8, n_layers=2, epochs=1, steps_per_epoch=2, batch_size=8,
             verbose=0, random_state=0, device="cpu")


def _frame() -> pd.DataFrame:
    t = np.arange(T)
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": np.sin(t / 5) + 0.1 * rng.standard_normal(T), "b": np.cos(t / 9) + 0.05 * t},
                        index=pd.date_range("2020-01-01", periods=T, freq="h"))


MODELS = {
    "essm": lambda: ESSMForecaster(**SMALL, d_state=8),
    "essm-levels": lambda: ESSMForecaster(**SMALL, d_state=8, difference=False),
    "lstm": lambda: LSTMForecaster(**SMALL),
}


@pytest.fixture(params=sorted(MODELS))
def fitted(request):
    frame = _frame()
    return MODELS[request.param]().fit(frame.iloc[:200]), frame.to_numpy()


def _count_prefill_rows(model, monkeypatch) -> list[int]:
    rows: list[int] = []
    real = model.net_.prefill

    def counting(x, state=None, positions=None):
        rows.append(x.shape[1])
        return real(x, state, positions)
    monkeypatch.setattr(model.net_, "prefill", counting)
    return rows


def test_one_pass_pieces_match_one_whole_forward(fitted, monkeypatch):
    model, values = fitted
    x = model._tensor(model._scale(values))
    with torch.no_grad():
        whole = model._unscale_targets(model._run(x[None])[0].numpy())  # the convolution view, at once
    origins = np.array([150, 11, 259, 40, 41, 199])  # any order; the answer keeps it
    monkeypatch.setattr(neural, "FORECAST_CHUNK_VALUES", 7 * H * 2)  # 7 rows a piece
    rows = _count_prefill_rows(model, monkeypatch)
    got = model.forecast_one_pass(values, origins)
    np.testing.assert_allclose(got, whole[origins], atol=1e-5, rtol=0)
    assert max(rows) == 7 and sum(rows) == 260  # pieces of 7 rows, up to the last origin
    np.testing.assert_allclose(model.forecast_one_pass(values), whole, atol=1e-5, rtol=0)


def test_windowed_pieces_match_one_batch(fitted, monkeypatch):
    model, values = fitted
    origins = np.arange(LOOKBACK - 1, T - H)
    x = model._tensor(model._scale(values))
    windows = x[torch.as_tensor(origins)[:, None] + torch.arange(-LOOKBACK + 1, 1)]
    with torch.no_grad():
        one_batch = model._unscale_targets(model._run(windows)[:, -1].numpy())
    monkeypatch.setattr(neural, "FORECAST_CHUNK_VALUES", H * 2 * 3)  # 3 windows a piece
    np.testing.assert_allclose(model.forecast_windows(values, origins, LOOKBACK), one_batch, atol=1e-5, rtol=0)


def test_windowed_pieces_run_the_head_at_each_window_end_only(fitted, monkeypatch):
    """A piece holds one forecast per window, (batch, 1, H, k), never (batch, lookback, H, k),
    and no more windows than the budget allows."""
    model, values = fitted
    monkeypatch.setattr(neural, "FORECAST_CHUNK_VALUES", H * 2 * 3)  # 3 windows a piece
    shapes = []
    real = model._run

    def run(x, net=None, positions=None):
        out = real(x, net, positions)
        shapes.append(tuple(out.shape))
        return out
    monkeypatch.setattr(model, "_run", run)
    origins = np.arange(LOOKBACK - 1, T - H)
    model.forecast_windows(values, origins, LOOKBACK)
    assert sum(s[0] for s in shapes) == len(origins)
    assert all(s[0] <= 3 and s[1:] == (1, H, 2) for s in shapes)


def test_validation_loss_does_not_depend_on_the_pieces(monkeypatch):
    frame = _frame()
    losses = []
    for budget in (neural.FORECAST_CHUNK_VALUES, 9 * H * 2):
        monkeypatch.setattr(neural, "FORECAST_CHUNK_VALUES", budget)
        model = ESSMForecaster(**SMALL, d_state=8).fit(frame)  # validation split on: val_loss per epoch
        losses.append([entry["val_loss"] for entry in model.history_])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_stream_rows_outside_the_series_are_refused(fitted):
    model, values = fitted
    with pytest.raises(ValueError, match="forecast rows"):
        model.forecast_one_pass(values, np.array([0, T]))
