"""The head at chosen positions only: the nets' `forward(x, positions)` and the trainer's
`loss_positions`, which scores each training window at a random draw of its positions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tsessm import ESSMForecaster, LSTMForecaster
from tsessm.nn import ESSMNet
from tsessm.nn.channels import ChannelIndependent
from tsessm.nn.differenced import Differenced
from tsessm.nn.lstm_net import LSTMNet

H = 4
NETS = {
    "essm": lambda: ESSMNet(3, 2, H, d_model=8, d_state=4, n_layers=2),
    "lstm": lambda: LSTMNet(3, 2, H, d_model=8),
    "differenced": lambda: Differenced(ESSMNet(3, 2, H, d_model=8, d_state=4)),
    "channels": lambda: ChannelIndependent(LSTMNet(1, 1, H, d_model=8), 3),
}


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("positions", [torch.tensor([0, 5, 6, 19]), slice(19, 20), slice(7, None)])
def test_forward_at_positions_is_the_whole_forward_there(name, positions):
    torch.manual_seed(0)
    net = NETS[name]().eval()
    x = torch.randn(2, 20, 3)
    with torch.no_grad():
        whole, picked = net(x), net(x, positions)
    assert picked.shape[0] == 2 and picked.shape[2] == H
    torch.testing.assert_close(picked, whole[:, positions], atol=1e-6, rtol=1e-5)


def _frame(n: int = 300) -> pd.DataFrame:
    t = np.arange(n)
    rng = np.random.default_rng(1)
    return pd.DataFrame({"y": np.sin(t / 6) + 0.1 * rng.standard_normal(n)},
                        index=pd.date_range("2021-01-01", periods=n, freq="h"))


SMALL = dict(horizon=H, lookback=24, d_model=8, epochs=2, steps_per_epoch=3, batch_size=4, verbose=0,
             random_state=0, device="cpu")


@pytest.mark.parametrize("cls", [ESSMForecaster, LSTMForecaster])
def test_loss_positions_trains_on_a_draw_and_covering_all_is_the_default(cls):
    frame = _frame()
    default = cls(**SMALL).fit(frame)
    every = cls(**SMALL, loss_positions=10_000).fit(frame)  # more than the window has: all positions
    drawn = cls(**SMALL, loss_positions=3).fit(frame)
    np.testing.assert_array_equal(every.predict().to_numpy(), default.predict().to_numpy())
    assert [e["train_loss"] for e in every.history_] == [e["train_loss"] for e in default.history_]
    assert [e["train_loss"] for e in drawn.history_] != [e["train_loss"] for e in default.history_]
    assert np.isfinite(drawn.predict().to_numpy()).all()


def test_loss_positions_draws_sorted_distinct_positions_after_the_burn_in():
    model = ESSMForecaster(**SMALL, loss_positions=5)
    model.device_ = torch.device("cpu")
    for _ in range(20):
        drawn = model._loss_positions(burn_in=12, window=48)
        assert len(drawn) == 5 and drawn.min() >= 12 and drawn.max() < 48
        assert torch.equal(drawn, torch.unique(drawn))  # sorted, no repeats


@pytest.mark.parametrize("bad", [0, -2, 1.5, "8", True])
def test_bad_loss_positions_is_refused_before_training(bad):
    model = ESSMForecaster(**SMALL, loss_positions=bad)
    with pytest.raises((ValueError, TypeError), match="loss_positions"):
        model.fit(_frame())
    assert not hasattr(model, "net_")


def test_scoring_every_position_as_a_draw_is_the_default_training(monkeypatch):
    """Predictions and targets line up at drawn positions: a draw of every position after the
    burn-in (an index tensor, not the None path) trains as the default does."""
    frame = _frame()
    default = ESSMForecaster(**SMALL).fit(frame)
    model = ESSMForecaster(**SMALL)
    monkeypatch.setattr(model, "_loss_positions",
                        lambda burn_in, window: torch.arange(burn_in, window, device=model.device_))
    model.fit(frame)
    np.testing.assert_allclose([e["train_loss"] for e in model.history_],
                               [e["train_loss"] for e in default.history_], rtol=1e-5)
    np.testing.assert_allclose(model.predict().to_numpy(), default.predict().to_numpy(), rtol=1e-4, atol=1e-5)
