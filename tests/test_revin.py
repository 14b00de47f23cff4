"""`revin`: the causal, streaming RevIN (`tsessm.nn.rescaled`). Its moving average against
pandas', its four views (forward, prefill in pieces, step, the numpy engine) against each other,
and the property it exists for: the forecaster is scale-equivariant."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tsessm import ESSMForecaster, LSTMForecaster
from tsessm.nn import ESSMNet
from tsessm.nn.channels import ChannelIndependent
from tsessm.nn.differenced import Differenced
from tsessm.nn.engine import compile_engine
from tsessm.nn.lstm_net import LSTMNet
from tsessm.nn.rescaled import Rescaled, decay, ewm_scan

H, C = 3, 3


def test_the_moving_average_is_pandas_ewm_across_chunks_and_pieces():
    v = torch.rand(2, 150, C, dtype=torch.float64)  # longer than one scan chunk
    beta = decay(20)
    whole, _, _ = ewm_scan(v, v.new_zeros(2, C), v.new_zeros(2, 1), beta)
    first, total, weight = ewm_scan(v[:, :70], v.new_zeros(2, C), v.new_zeros(2, 1), beta)
    rest, _, _ = ewm_scan(v[:, 70:], total, weight, beta)
    for b in range(2):
        expected = pd.DataFrame(v[b].numpy()).ewm(span=20, adjust=True).mean().to_numpy()
        np.testing.assert_allclose(whole[b].numpy(), expected, rtol=1e-10)
    torch.testing.assert_close(torch.cat([first, rest], 1), whole)


NETS = {
    "essm": lambda: ESSMNet(C, 2, H, d_model=8, d_state=4, n_layers=2),
    "lstm": lambda: LSTMNet(C, 2, H, d_model=8),
    "channels": lambda: ChannelIndependent(ESSMNet(1, 1, H, d_model=8, d_state=4), C),
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_forward_prefill_step_and_engine_agree(name):
    torch.manual_seed(0)
    targets = [0, 1, 2] if name == "channels" else [2, 0]
    net = Differenced(Rescaled(NETS[name](), span=10, targets=targets)).eval()
    x = torch.randn(2, 90, C).cumsum(1) * torch.tensor([1.0, 5.0, 0.2])
    with torch.no_grad():
        whole = net(x)
        a, state = net.prefill(x[:, :37])
        b, _ = net.prefill(x[:, 37:], state)
        steps, s = [], net.initial_state(2)
        for t in range(90):
            out, s = net.step(x[:, t], s)
            steps.append(out)
        engine, es = compile_engine(net), [t.numpy() for t in net.initial_state(2)]
        engine_out = []
        for t in range(90):
            out, es = engine.step(x[:, t].numpy(), es)
            engine_out.append(out)
    torch.testing.assert_close(torch.cat([a, b], 1), whole, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.stack(steps, 1), whole, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(np.stack(engine_out, 1), whole.numpy(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(net(x, slice(80, 85)), whole[:, 80:85])


def _series(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    t = np.arange(n)
    y = 10 + 3 * np.sin(t / 5) + rng.standard_normal(n).cumsum()
    return pd.DataFrame({"y": y}, index=pd.date_range("2022-01-01", periods=n, freq="h"))


SMALL = dict(horizon=H, lookback=32, d_model=8, epochs=2, steps_per_epoch=4, batch_size=8, verbose=0,
             random_state=0, device="cpu")


@pytest.mark.parametrize("cls", [ESSMForecaster, LSTMForecaster])
def test_a_rescaled_forecaster_is_scale_equivariant_and_a_plain_one_is_not(cls):
    frame = _series()
    values = frame.to_numpy()
    origins = np.arange(40, len(values) - H)
    gaps = {}
    for revin in (0, 32):
        model = cls(**SMALL, revin=revin).fit(frame)
        base = model.forecast_windows(values, origins, 32)
        stretched = model.forecast_windows(4.0 * values - 7.0, origins, 32)
        gaps[revin] = np.abs(stretched - (4.0 * base - 7.0)).max() / np.abs(4.0 * base).max()
        assert np.isfinite(base).all()
    assert gaps[32] < 1e-3 < gaps[0]


def test_streaming_updates_equal_one_pass_with_revin():
    frame = _series()
    model = ESSMForecaster(**SMALL, revin=16).fit(frame.iloc[:300])
    one_pass = model.forecast_one_pass(frame.to_numpy(), np.array([349]))
    for t in range(300, 350):
        model.update(frame.iloc[t : t + 1])
    np.testing.assert_allclose(model.predict().to_numpy().ravel(), one_pass.ravel(), rtol=1e-4, atol=1e-5)


def test_revin_takes_numpy_integers():
    model = ESSMForecaster(**SMALL, revin=np.int64(16)).fit(_series())
    assert np.isfinite(model.predict().to_numpy()).all()


@pytest.mark.parametrize("targets", [[0], [0, 3], []])
def test_rescaled_refuses_targets_that_are_not_the_nets_outputs(targets):
    with pytest.raises(ValueError, match="targets"):
        Rescaled(ESSMNet(3, 2, H, d_model=8, d_state=4), span=8, targets=targets)


@pytest.mark.parametrize("kw,match", [({"revin": -1}, "revin"), ({"revin": 2.5}, "revin"), ({"revin": True}, "revin"),
                                      ({"revin": 8, "difference": False}, "difference=True")])
def test_bad_revin_is_refused(kw, match):
    model = ESSMForecaster(**SMALL, **kw)
    with pytest.raises(ValueError, match=match):
        model.fit(_series())
    assert not hasattr(model, "net_")
