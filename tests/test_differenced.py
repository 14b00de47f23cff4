"""Differenced nets: the three views agree, the state carries the last row, levels cancel."""
import numpy as np
import pandas as pd
import pytest
import torch

from tsessm import ESSMForecaster, LSTMForecaster
from tsessm.backtest import backtest
from tsessm.nn import ESSMNet, LSTMNet
from tsessm.nn.differenced import Differenced, first_differences
from views import assert_views_agree


def _nets():
    torch.manual_seed(0)
    return {"essm": Differenced(ESSMNet(3, 2, horizon=4, d_model=16, n_layers=2, d_state=8, n_heads=2)).eval(),
            "lstm": Differenced(LSTMNet(3, 2, horizon=4, d_model=16, n_layers=2)).eval()}


@pytest.mark.parametrize("name", ["essm", "lstm"])
def test_forward_step_prefill_agree_and_levels_cancel(name):
    net = _nets()[name]
    x = torch.randn(2, 60, 3)
    with torch.no_grad():
        y = net(x)
        # independent reference: the inner net on differences computed with numpy
        ref_in = np.diff(x.numpy(), axis=1, prepend=x.numpy()[:, :1])
        torch.testing.assert_close(y, net.net(torch.as_tensor(ref_in)), rtol=0, atol=0)
        _, end = net.prefill(x)
        shifted = net(x + 7.5)
    assert_views_agree(net, x, split=23)
    torch.testing.assert_close(end[-2], x[:, -1])  # the last row seen
    torch.testing.assert_close(shifted, y, rtol=0, atol=1e-5)  # a constant level never reaches the net


def test_first_differences_start_at_zero():
    x = torch.tensor([[[1.0], [3.0], [2.0]]])
    assert first_differences(x).flatten().tolist() == [0.0, 2.0, -1.0]


@pytest.mark.parametrize("cls", [ESSMForecaster, LSTMForecaster])
def test_relative_differenced_forecast_moves_with_the_level(cls):
    t = np.arange(300)
    y = pd.DataFrame({"y": np.sin(2 * np.pi * t / 24) + 0.01 * t},
                     index=pd.date_range("2024-01-01", periods=300, freq="h"))
    model = cls(horizon=6, lookback=24, d_model=8, n_layers=1, epochs=1, steps_per_epoch=3, verbose=0,
                random_state=0, difference=True).fit(y.iloc[:200])
    for mode in ("windowed", "one-pass"):
        base = backtest(model, y, test_start=250, train_rows=200, mode=mode).forecasts
        moved = backtest(model, y + 40.0, test_start=250, train_rows=200, mode=mode).forecasts
        np.testing.assert_allclose(moved - base, 40.0, atol=1e-3)
    with pytest.raises(TypeError, match="difference"):
        cls(difference="yes").fit(y)


def test_model_files_from_before_difference_load_as_level_models(tmp_path):
    """A (pickled) file written before `difference` existed holds a level-input net; the new default
    must not apply. (Such eSSM files hold the format-1 layer and are refused; the LSTM's load.)"""
    import pickle

    t = np.arange(200)
    y = pd.DataFrame({"y": np.sin(t / 5)}, index=pd.date_range("2024-01-01", periods=200, freq="h"))
    model = LSTMForecaster(horizon=4, lookback=16, d_model=8, n_layers=1, epochs=1, steps_per_epoch=2, verbose=0,
                           random_state=0, difference=False).fit(y)
    params = model.get_params(deep=False)
    del params["difference"]  # what an older version wrote
    path = tmp_path / "old.pkl"
    path.write_bytes(pickle.dumps({"format": 1, "class": "tsessm.forecasters.lstm.LSTMForecaster",
                                   "params": params, "state": model._get_fitted_state()}))
    loaded = LSTMForecaster.load(path, allow_pickle=True)
    assert loaded.difference is False
    np.testing.assert_allclose(loaded.predict().to_numpy(), model.predict().to_numpy(), rtol=0, atol=0)
