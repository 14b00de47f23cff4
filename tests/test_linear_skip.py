"""The eSSM's linear skip path: with the net silenced it is exactly NLinear; it streams like the
rest of the model; bad settings are named."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tsessm import ESSMForecaster, LinearForecaster

T, L, H = 400, 24, 6
_t = np.arange(T)
Y = pd.DataFrame({"y": np.sin(_t / 6) + 0.3 * np.sin(_t / 17) + 0.05 * np.random.default_rng(0).standard_normal(T)},
                 index=pd.date_range("2024-01-01", periods=T, freq="h"))
KW = dict(horizon=H, lookback=32, d_model=8, d_state=8, epochs=1, steps_per_epoch=2, verbose=0, random_state=0,
          device="cpu", validation_fraction=0.0)


def test_with_the_net_silenced_the_skip_path_is_nlinear():
    essm = ESSMForecaster(**KW, linear_skip=L).fit(Y[:300])
    with torch.no_grad():  # the head reads nothing: the forecast is the last value plus the linear map
        essm.net_.head.weight.zero_()
        essm.net_.head.bias.zero_()
    essm.update(Y[300:301])  # recompute the state's forecast with the silenced head
    linear = LinearForecaster(horizon=H, lookback=L, alpha=1.0, normalization="last").fit(Y[:300]).update(Y[300:301])
    np.testing.assert_allclose(essm.predict().to_numpy(), linear.predict().to_numpy(), atol=2e-4)
    rows, _ = essm.history_rows(Y)
    origins = np.arange(320, 390)
    np.testing.assert_allclose(essm.forecast_windows(rows, origins, 32), linear.forecast_windows(rows, origins, L),
                               atol=2e-4)


def test_the_skip_path_streams_like_the_backtest():
    essm = ESSMForecaster(**{**KW, "validation_fraction": 0.1}, linear_skip=L).fit(Y[:300])
    rows, _ = essm.history_rows(Y)
    one_pass = essm.forecast_one_pass(rows, [310, 350])
    for t in range(300, 351):
        forecast = essm.observe([Y.y.iloc[t]])
        if t in (310, 350):
            np.testing.assert_allclose(forecast, one_pass[[310, 350].index(t)], atol=1e-4)


def test_bad_skip_settings_are_named():
    with pytest.raises(ValueError, match="linear_skip must be 0 or a window of at most lookback=32"):
        ESSMForecaster(**KW, linear_skip=64).fit(Y)
    with pytest.raises(ValueError, match="linear_skip needs relative=True"):
        ESSMForecaster(**KW, linear_skip=8, relative=False).fit(Y)
