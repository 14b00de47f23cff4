"""Sliding-window backtest against one-pass backtest: wall time over the same test split."""
from __future__ import annotations

from tsessm.backtest import backtest
from tsessm.bench.timing import interleaved_times, medians, spread, synchronizer
from tsessm.forecasters.essm import ESSMForecaster
from tsessm.jobs import open_data


def backtest_times(width: dict[str, int], *, data: str = "ETTh1", columns: tuple[str, ...] | None = ("OT",),
                   lookback: int = 96, horizon: int = 24, train_steps: int = 5, repeats: int = 3,
                   device: str = "cpu", data_dir: str | None = None, seed: int = 0) -> dict:
    """Seconds of `backtest(mode="windowed")` and `backtest(mode="one-pass")` on the test split.

    The eSSM is trained for a few steps only: its weights do not change what is timed.
    """
    source = open_data(data, lookback=lookback, columns=list(columns) if columns else None, data_dir=data_dir)
    model = ESSMForecaster(horizon=horizon, lookback=lookback, **width, epochs=1, steps_per_epoch=train_steps,
                           verbose=0, random_state=seed, device=device)
    model.fit(source.train, y_val=source.validation)

    def run(mode: str):
        return lambda: backtest(model, source.history, test_start=source.test_start,
                                train_rows=source.train_stop, lookback=lookback, mode=mode)
    times = interleaved_times({"windowed": run("windowed"), "one_pass": run("one-pass")}, repeats=repeats,
                              warmup=1, sync=synchronizer(model.device_))
    med = medians(times)
    return {"data": source.name, "columns": list(source.frame.columns), "lookback": lookback, "horizon": horizon,
            "n_windows": source.test_stop - horizon - source.test_start + 1, "history_rows": source.test_stop,
            "repeats": repeats, "windowed_s": med["windowed"], "one_pass_s": med["one_pass"],
            "windowed_spread": spread(times["windowed"]), "one_pass_spread": spread(times["one_pass"]),
            "windowed_over_one_pass": med["windowed"] / med["one_pass"]}
