"""Exploration for the accuracy issue: the eSSM, the linear model and their average (a declared
two-model ensemble) on ETTh1 S, windowed MSE on the validation and the test split, the eSSM with
the accuracy benchmark's parameters, the linear model at lookback 336. Not part of the grid.

    python pipelines/explore_ensemble.py
"""
import numpy as np
from tsessm import jobs
from tsessm.backtest import backtest
from tsessm.bench.accuracy import Cell, cell_params, load_config
from tsessm.bench.options import DEFAULT_CONFIG
config = load_config(DEFAULT_CONFIG)
for H in (24, 168):
    src = jobs.open_data("ETTh1", lookback=336, columns=["OT"])
    ep = cell_params(Cell("ETTh1", "S", H, "essm"), config, 0)
    essm = jobs.make_model("essm", **ep); jobs.train(essm, src)
    lp = cell_params(Cell("ETTh1", "S", H, "linear"), config, 0)
    lin = jobs.make_model("linear", **lp); jobs.train(lin, src)
    out = {}
    for split in ("val", "test"):
        if split == "val":
            frame, start = src.frame.iloc[: src.val[1]], src.val[0] + 336
        else:
            frame, start = src.history, src.test_start
        re = backtest(essm, frame, test_start=start, train_rows=src.train_stop, lookback=ep["lookback"])
        rl = backtest(lin, frame, test_start=start, train_rows=src.train_stop, lookback=336)
        n = min(len(re.forecasts), len(rl.forecasts))
        assert (re.origins[-n:] == rl.origins[-n:]).all()
        avg = (re.forecasts[-n:] + rl.forecasts[-n:]) / 2
        mse = lambda f: float(np.mean((re.scaled(f) - re.scaled(re.actuals[-n:])) ** 2))
        out[split] = (mse(re.forecasts[-n:]), mse(rl.forecasts[-n:]), mse(avg))
    print(f"H={H} eSSM/linear/average  val {out['val'][0]:.4f} {out['val'][1]:.4f} {out['val'][2]:.4f}   "
          f"test {out['test'][0]:.4f} {out['test'][1]:.4f} {out['test'][2]:.4f}", flush=True)
