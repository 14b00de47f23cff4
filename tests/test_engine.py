"""The numpy recurrent engine against the nets' own `step`, and `observe` on the forecasters."""
import copy

import numpy as np
import pandas as pd
import pytest
import torch

from tsessm import ESSMForecaster, LSTMForecaster, StreamingNotSupported
from tsessm.nn import ESSMNet, LSTMNet
from tsessm.nn.differenced import Differenced
from tsessm.nn.engine import compile_engine

NETS = {
    "essm-1-head": lambda: ESSMNet(3, 2, 5, d_model=16, n_layers=2, d_state=8),
    "essm-4-heads-linear": lambda: ESSMNet(3, 2, 5, d_model=16, n_layers=3, d_state=8, n_heads=4),
    "essm-glu-bilinear": lambda: ESSMNet(3, 2, 5, d_model=16, d_state=8, n_heads=2, mixer="glu",
                                         discretization="bilinear", init="legs"),
    "lstm": lambda: LSTMNet(3, 2, 5, d_model=16, n_layers=2),
}


def _randomise(net: torch.nn.Module) -> None:
    """Non-trivial LayerNorm affines and biases, so folding them into the matrices is tested."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("differenced", [False, True])
@pytest.mark.parametrize("kind", sorted(NETS))
def test_engine_equals_net_step_float32_and_float64(kind, differenced):
    torch.manual_seed(0)
    net = NETS[kind]()
    _randomise(net)
    net = (Differenced(net) if differenced else net).eval()
    x = torch.randn(4, 60, 3)
    with torch.no_grad():
        _, state = net.prefill(x[:, :20])
    for dtype, tol in ((torch.float32, 1e-6), (torch.float64, 1e-12)):
        net_d = copy.deepcopy(net).to(dtype)
        engine = compile_engine(net_d)
        torch_state = [s.to(torch.complex128 if s.is_complex() and dtype == torch.float64 else
                            s.dtype if s.is_complex() else dtype) for s in state]
        np_state = [s.numpy() for s in torch_state]
        for t in range(20, 60):
            with torch.no_grad():
                expected, torch_state = net_d.step(x[:, t].to(dtype), torch_state)
            got, np_state = engine.step(x[:, t].to(dtype).numpy(), np_state)
            scale = expected.abs().max().item()
            assert np.abs(got - expected.numpy()).max() <= tol * max(1.0, scale), (dtype, t)
            assert got.dtype == expected.numpy().dtype
        for a, b in zip(np_state, torch_state):  # the same state: interchangeable mid-stream
            assert a.shape == tuple(b.shape) and a.dtype == b.numpy().dtype
            assert np.abs(a - b.numpy()).max() <= tol * max(1.0, np.abs(a).max())


def test_engine_refuses_a_bidirectional_net():
    net = ESSMNet(1, 1, 3, d_model=8, d_state=4, bidirectional=True)
    with pytest.raises(StreamingNotSupported, match="bidirectional"):
        compile_engine(net)
    with pytest.raises(TypeError, match="no recurrent engine"):
        compile_engine(torch.nn.Linear(2, 2))


def _series(n: int = 400, tz=None, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return pd.DataFrame({"y": np.sin(t / 4) + 0.1 * rng.standard_normal(n), "x": np.cos(t / 9)},
                        index=pd.date_range("2024-03-18", periods=n, freq="h", tz=tz, name="time"))


MODELS = {
    "essm": lambda: ESSMForecaster(horizon=6, lookback=24, d_model=16, d_state=8, epochs=1, steps_per_epoch=3,
                                   verbose=0, random_state=0, target="y"),
    "lstm": lambda: LSTMForecaster(horizon=6, lookback=24, d_model=16, epochs=1, steps_per_epoch=3,
                                   verbose=0, random_state=0, target="y"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_observe_equals_the_convolution_view_and_update_predict(name):
    frame = _series(tz="Europe/Berlin")  # crosses the spring daylight-saving change
    model = MODELS[name]().fit(frame.iloc[:300])
    chunked, one_by_one = copy.deepcopy(model), copy.deepcopy(model)
    new = frame.iloc[300:340]
    for time, row in new.iterrows():
        forecast = model.observe(row[list(model.columns_)].to_numpy(), time)
        one_by_one.update(new.loc[[time]])
    chunked.update(new)  # one prefill: the convolution view
    assert forecast.shape == (6, 1)
    np.testing.assert_allclose(forecast, chunked.predict().to_numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(forecast, one_by_one.predict().to_numpy(), rtol=1e-9, atol=1e-12)
    assert model.last_index_.equals(chunked.last_index_) and model.n_seen_ == chunked.n_seen_ == 340
    assert str(model.last_index_.tz) == "Europe/Berlin"
    # time=None takes the next step; the forecast is indexed after it
    model.observe([0.2, 0.1])
    assert model.predict().index[0] == frame.index[340] + pd.Timedelta("1h")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_observe_refuses_bad_rows_and_leaves_the_model_unchanged(name):
    model = MODELS[name]().fit(_series().iloc[:300])
    before = copy.deepcopy(model)
    expected_time = model.last_index_[0] + pd.Timedelta("1h")
    cases = [
        (([np.nan, 0.0], None), ValueError, "'y' is nan"),
        (([0.0, np.inf], None), ValueError, "'x' is inf"),
        (([0.0], None), ValueError, r"one row of 2 numbers .*\['y', 'x'\]"),
        (([[0.0, 1.0]], None), ValueError, "shape"),
        ((["a", "b"], None), TypeError, "numbers"),
        (([0.0, 1.0], expected_time + pd.Timedelta("1h")), ValueError, "leaves a gap"),
        (([0.0, 1.0], model.last_index_[0]), ValueError, "is not after"),
        (([0.0, 1.0], "not a time"), ValueError, "not a timestamp"),
        (([0.0, 1.0], pd.Timestamp(expected_time).tz_localize("UTC")), ValueError, "comparable"),
    ]
    for (values, time), error, message in cases:
        with pytest.raises(error, match=message):
            model.observe(values, time)
        assert model.n_seen_ == before.n_seen_ and model.last_index_.equals(before.last_index_)
        for a, b in zip(model.state_, before.state_):
            assert torch.equal(a, b)
        np.testing.assert_array_equal(model.current_forecast(), before.current_forecast())
    model.observe([0.0, 1.0], expected_time)  # still usable
    assert model.n_seen_ == before.n_seen_ + 1


def test_observe_on_numpy_fits_takes_no_time_and_survives_save_load(tmp_path):
    values = _series().to_numpy()
    model = MODELS["essm"]().set_params(target=None).fit(values[:300])
    out = model.observe(values[300])
    assert out.shape == (6, 2)
    with pytest.raises(ValueError, match="integer steps"):
        model.observe(values[301], time=301)
    model.save(tmp_path / "m.tsm")
    loaded = ESSMForecaster.load(tmp_path / "m.tsm")
    np.testing.assert_allclose(loaded.observe(values[301]), model.observe(values[301]), rtol=1e-6)


def test_observe_on_a_bidirectional_essm_is_refused():
    model = ESSMForecaster(horizon=4, lookback=16, d_model=8, d_state=4, bidirectional=True, epochs=1,
                           steps_per_epoch=2, verbose=0, random_state=0).fit(_series()[["y"]].iloc[:200])
    with pytest.raises(StreamingNotSupported):
        model.observe([0.0])
    with pytest.raises(Exception, match="fitted"):
        ESSMForecaster().observe([0.0])
