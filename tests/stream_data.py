"""The small two-column hourly series and the tiny fitted eSSM the stream and serve tests share."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tsessm import ESSMForecaster

N_FIT = 300


def hourly(n_new: int) -> pd.DataFrame:
    """N_FIT rows to fit on, then `n_new` new ones: a drifting sine "load" and a cosine "temp"."""
    t = np.arange(N_FIT + n_new)
    index = pd.date_range("2024-01-01", periods=len(t), freq="h", name="time")
    return pd.DataFrame({"load": np.sin(t / 8) + 0.01 * t, "temp": np.cos(t / 5)}, index=index)


def fitted_model_file(data: pd.DataFrame, folder: Path) -> Path:
    """A tiny eSSM fitted on the first N_FIT rows, saved in `folder`."""
    model = ESSMForecaster(horizon=4, lookback=16, d_model=8, d_state=8, n_layers=1, epochs=1,
                           steps_per_epoch=2, verbose=0, random_state=0, device="cpu")
    path = folder / "model.tsm"
    model.fit(data.iloc[:N_FIT]).save(path)
    return path
