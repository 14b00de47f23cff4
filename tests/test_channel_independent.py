"""Channel independence: each column forecast from itself by one shared net, in every view (training
forward, prefill, step, the numpy engine, save/load), and refused where other inputs exist."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tsessm import ESSMForecaster, LSTMForecaster
from tsessm.nn.channels import ChannelIndependent
from tsessm.nn.engine import compile_engine
from tsessm.nn.essm_net import ESSMNet
from tsessm.nn.lstm_net import LSTMNet
from views import assert_views_agree

T, H = 360, 6
_t = np.arange(T)
_noise = np.random.default_rng(0).standard_normal((T, 3))
Y = pd.DataFrame({"a": np.sin(_t / 6) + 0.05 * _noise[:, 0], "b": np.cos(_t / 11) + 0.05 * _noise[:, 1],
                  "c": 0.01 * _t + 0.05 * _noise[:, 2]}, index=pd.date_range("2024-01-01", periods=T, freq="h"))
KW = dict(horizon=H, lookback=24, d_model=8, d_state=8, epochs=1, steps_per_epoch=3, verbose=0, random_state=0,
          device="cpu", channel_independent=True)


def _nets():
    torch.manual_seed(0)
    return [ESSMNet(1, 1, H, d_model=8, d_state=8, n_layers=2), LSTMNet(1, 1, H, d_model=8, n_layers=1)]


@pytest.mark.parametrize("inner", _nets(), ids=["essm", "lstm"])
def test_each_channel_is_forecast_by_the_inner_net_alone(inner):
    net = ChannelIndependent(inner, 3).eval()
    x = torch.randn(2, 20, 3)
    y = assert_views_agree(net, x, split=7)  # forward == step == prefill, states included
    assert y.shape == (2, 20, H, 3)
    with torch.no_grad():
        for c in range(3):  # channel c's forecast is the inner net on channel c, nothing else
            torch.testing.assert_close(y[..., c], inner(x[..., c : c + 1])[..., 0], rtol=1e-5, atol=1e-6)
        bumped = x.clone()
        bumped[..., 1] += 1.0
        changed = (net(bumped) - y).abs().amax(dim=(0, 1, 2))
    assert changed[1] > 1e-3 and changed[0] == 0 and changed[2] == 0


@pytest.mark.parametrize("inner", _nets(), ids=["essm", "lstm"])
def test_the_numpy_engine_equals_the_wrapper_step(inner):
    net = ChannelIndependent(inner, 3).eval()
    engine = compile_engine(net)
    state = net.initial_state(2)
    numpy_state = [s.numpy().copy() for s in state]
    for x_t in torch.randn(5, 2, 3):
        with torch.no_grad():
            out, state = net.step(x_t, state)
        out_np, numpy_state = engine.step(x_t.numpy(), numpy_state)
        np.testing.assert_allclose(out_np, out.numpy(), rtol=1e-4, atol=1e-5)
    for s, s_np in zip(state, numpy_state, strict=True):
        assert s.shape[:2] == (2, 3)  # batch first, channels second
        np.testing.assert_allclose(s_np, s.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [ESSMForecaster, LSTMForecaster])
def test_a_channel_independent_forecaster_streams_saves_and_loads(cls, tmp_path):
    kw = {k: v for k, v in KW.items() if cls is ESSMForecaster or k != "d_state"}
    model = cls(**kw, linear_skip=12).fit(Y[:300])
    single = cls(**{**kw, "channel_independent": False}).fit(Y[:300][["a"]])
    n_params = [sum(p.numel() for p in m.net_.parameters()) for m in (model, single)]
    assert n_params[0] == n_params[1]  # one channel's net, whatever the number of columns
    rows, _ = model.history_rows(Y)
    one_pass = model.forecast_one_pass(rows, [305, 330])
    windowed = model.forecast_windows(rows, [330], 24)
    assert np.isfinite(windowed).all() and windowed.shape == (1, H, 3)
    for t in range(300, 331):  # row by row through the engine == the one-pass backtest
        forecast = model.observe(Y.iloc[t].to_numpy())
        if t in (305, 330):
            np.testing.assert_allclose(forecast, one_pass[[305, 330].index(t)], atol=1e-4)
    model.save(tmp_path / "m.tsessm")
    loaded = cls.load(tmp_path / "m.tsessm")
    assert loaded.channel_independent is True
    np.testing.assert_allclose(loaded.predict().to_numpy(), model.predict().to_numpy(), atol=1e-6)
    np.testing.assert_allclose(loaded.forecast_windows(rows, [330], 24), windowed, atol=1e-6)


def test_other_inputs_are_refused_and_leave_the_model_unfitted():
    model = ESSMForecaster(**{**KW, "target": "a"})
    with pytest.raises(ValueError, match="channel_independent=True .* 2 of the 3 input columns are not targets"):
        model.fit(Y)
    assert not hasattr(model, "net_")
    with pytest.raises(ValueError, match="calendar"):
        ESSMForecaster(**KW, calendar=["hour"]).fit(Y)
    with pytest.raises(TypeError, match="channel_independent must be True or False"):
        ESSMForecaster(**{**KW, "channel_independent": 1}).fit(Y)
