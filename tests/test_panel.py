"""PanelForecaster: a global model with one recurrent state per series."""
import numpy as np
import pandas as pd
import polars as pl
import pytest
import torch

from tsessm import ESSMForecaster
from tsessm.forecasters.panel import PanelForecaster

START = pd.Timestamp("2024-01-01")


def _panel(ids=("a", "b", "c"), n=160, offset=0):
    frames = []
    for i, sid in enumerate(ids):
        k = np.arange(offset, offset + n)
        frames.append(pd.DataFrame({"unique_id": sid, "ds": START + pd.to_timedelta(k, unit="h"),
                                    "y": np.sin(k / (5 + i)) * (i + 1) + 10 * i, "x": np.cos(k / 3 + i)}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def fitted():
    model = ESSMForecaster(horizon=4, target="y", lookback=16, d_model=8, d_state=8, n_layers=1, epochs=1,
                           steps_per_epoch=3, verbose=0, random_state=0)
    return PanelForecaster(model).fit(_panel())


def _reference(panel, history: pd.DataFrame) -> np.ndarray:
    """Convolution view over a series' whole history, scaled by its own statistics: (H,)."""
    i = panel.ids_.index(history.unique_id.iloc[0])
    values = history[panel.columns_].to_numpy()
    xs = torch.as_tensor(((values - panel.mean_[i]) / panel.std_[i]).astype(np.float32))[None]
    model = panel.model_
    with torch.no_grad():
        out = model._run(xs)[0, -1, :, 0].numpy()
    return out * panel.std_[i, 0] + panel.mean_[i, 0]


def test_update_of_a_subset_equals_convolution_and_leaves_others_untouched(fitted, tmp_path):
    fitted.save(tmp_path / "p.tsm")
    panel = PanelForecaster.load(tmp_path / "p.tsm")
    before_c = panel.predict(ids=["c"])
    full = _panel(n=200)
    new = full[(full.ds >= START + pd.Timedelta(hours=160)) & full.unique_id.isin(["a", "b"])]
    new = new[~((new.unique_id == "b") & (new.ds >= START + pd.Timedelta(hours=163)))]  # b gets 3 rows, a 40
    panel.update(new)
    forecast = panel.predict()
    for sid, rows in (("a", 200), ("b", 163)):
        history = full[full.unique_id == sid].iloc[:rows]
        got = forecast[forecast.unique_id == sid].y.to_numpy()
        np.testing.assert_allclose(got, _reference(panel, history), rtol=1e-5, atol=1e-5)
    pd.testing.assert_frame_equal(panel.predict(ids=["c"]), before_c)
    assert forecast[forecast.unique_id == "b"].ds.iloc[0] == START + pd.Timedelta(hours=163)


def test_new_series_gets_state_from_its_own_history(fitted, tmp_path):
    fitted.save(tmp_path / "p.tsm")
    panel = PanelForecaster.load(tmp_path / "p.tsm")
    newcomer = _panel(ids=("d",), n=40)
    newcomer["y"] = newcomer["y"] * 3 + 100
    panel.update(newcomer)
    got = panel.predict(ids=["d"]).y.to_numpy()
    np.testing.assert_allclose(got, _reference(panel, newcomer), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="'e' is new.*lookback=16"):
        panel.update(_panel(ids=("e",), n=5))


def test_bad_updates_leave_every_state_unchanged(fitted, tmp_path):
    fitted.save(tmp_path / "p.tsm")
    panel = PanelForecaster.load(tmp_path / "p.tsm")
    before = panel.predict()
    late = _panel(ids=("a",), n=2, offset=170)  # leaves a gap after hour 159
    ok = _panel(ids=("b",), n=2, offset=160)
    with pytest.raises(ValueError, match="series 'a'.*expected"):
        panel.update(pd.concat([ok, late]))
    nan = _panel(ids=("b",), n=2, offset=160)
    nan.loc[1, "y"] = np.nan
    with pytest.raises(ValueError, match="series 'b'.*'y'.*NaN"):
        panel.update(nan)
    with pytest.raises(ValueError, match="no column 'unique_id'"):
        panel.update(ok.rename(columns={"unique_id": "id"}))
    pd.testing.assert_frame_equal(panel.predict(), before)


def test_polars_in_polars_out_and_unknown_predict_id(fitted):
    model = ESSMForecaster(horizon=3, target="y", lookback=16, d_model=8, d_state=8, n_layers=1, epochs=1,
                           steps_per_epoch=2, verbose=0, random_state=1)
    panel = PanelForecaster(model, id_col="series", time_col="when").fit(
        pl.from_pandas(_panel(ids=("p", "q")).rename(columns={"unique_id": "series", "ds": "when"})))
    out = panel.predict(fh=[1, 3])
    assert isinstance(out, pl.DataFrame) and out.columns == ["series", "when", "y"] and out.height == 4
    with pytest.raises(ValueError, match="unknown series id 'zz'"):
        fitted.predict(ids=["zz"])


def test_observe_fast_path_equals_update(fitted, tmp_path):
    fitted.save(tmp_path / "p.tsm")
    by_update, by_observe = PanelForecaster.load(tmp_path / "p.tsm"), PanelForecaster.load(tmp_path / "p.tsm")
    new = _panel(ids=("c", "a"), n=1, offset=160)
    by_update.update(new)
    by_observe.observe(list(new.unique_id), list(new.ds), new[["y", "x"]].to_numpy())
    pd.testing.assert_frame_equal(by_update.predict(), by_observe.predict())
    before = by_observe.predict()
    with pytest.raises(ValueError, match="series 'a'.*expected"):
        by_observe.observe(["b", "a"], [START + pd.Timedelta(hours=160)] * 2, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="series 'b'.*'x'.*nan"):
        by_observe.observe(["b"], [START + pd.Timedelta(hours=160)], np.array([[0.0, np.nan]]))
    pd.testing.assert_frame_equal(by_observe.predict(), before)


def test_stream_runner_serves_a_panel_with_checkpoints(fitted, tmp_path):
    from tsessm.stream import run_stream

    fitted.save(tmp_path / "p.tsm")
    reference = PanelForecaster.load(tmp_path / "p.tsm")
    new = _panel(n=6, offset=160).sort_values(["ds", "unique_id"])
    records = [{"sid": r.unique_id, "time": r.ds.isoformat(), "y": r.y, "x": r.x} for r in new.itertuples()]
    records.insert(2, {"sid": "zz", "time": records[0]["time"], "y": 1.0, "x": 0.0})  # unknown id
    lines = []
    result = run_stream(str(tmp_path / "p.tsm"), records, lines.append, checkpoint=tmp_path / "ckpt",
                        checkpoint_every=4, id_col="sid", on_bad_record="skip")
    assert result.exit_code == 0 and result.counters.bad == 1 and result.counters.applied == len(new)
    last = {}
    for r in new.itertuples():
        reference.observe([r.unique_id], [r.ds], np.array([[r.y, r.x]]))
        last[r.unique_id] = reference.predict(ids=[r.unique_id]).y.to_numpy()
    emitted = {}
    for line in lines:
        out = line if isinstance(line, dict) else __import__("json").loads(line)
        emitted[out["id"]] = out["forecast"]["y"]
    for sid, expected in last.items():
        np.testing.assert_allclose(emitted[sid], expected, rtol=1e-6)
