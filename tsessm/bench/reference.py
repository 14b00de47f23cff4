"""Published reference numbers the accuracy benchmark is compared with.

MSE / MAE on values scaled by the train split's standard scaler, Informer protocol.
S4: Gu et al., "Efficiently Modeling Long Sequences with Structured State Spaces" (ICLR 2022),
forecasting tables in the appendix (univariate `S`, multivariate `M`).
"""
from __future__ import annotations

# (dataset, setting) -> {horizon: (mse, mae)}
S4: dict[tuple[str, str], dict[int, tuple[float, float]]] = {
    ("ETTh1", "S"): {24: (0.061, 0.191), 48: (0.079, 0.220), 168: (0.104, 0.258), 336: (0.080, 0.229),
                     720: (0.116, 0.271)},
    ("ETTh2", "S"): {24: (0.095, 0.234), 48: (0.191, 0.346), 168: (0.167, 0.333), 336: (0.189, 0.361),
                     720: (0.187, 0.358)},
    ("ETTm1", "S"): {24: (0.024, 0.117), 48: (0.051, 0.174), 96: (0.086, 0.229), 288: (0.160, 0.327),
                     672: (0.292, 0.466)},
    ("WTH", "S"): {24: (0.125, 0.254), 48: (0.181, 0.305), 168: (0.198, 0.333), 336: (0.300, 0.417),
                   720: (0.245, 0.375)},
    ("ECL", "S"): {48: (0.222, 0.350), 168: (0.331, 0.421), 336: (0.328, 0.422), 720: (0.428, 0.494),
                   960: (0.432, 0.497)},
    ("ETTh1", "M"): {24: (0.525, 0.542), 48: (0.641, 0.615), 168: (0.980, 0.779), 336: (1.407, 0.910),
                     720: (1.162, 0.842)},
    ("ETTm1", "M"): {24: (0.426, 0.487), 48: (0.580, 0.565), 96: (0.699, 0.649), 288: (0.824, 0.674),
                     672: (0.846, 0.709)},
    ("WTH", "M"): {24: (0.334, 0.385), 48: (0.406, 0.444), 168: (0.525, 0.527), 336: (0.531, 0.539),
                   720: (0.578, 0.578)},
    ("ECL", "M"): {48: (0.255, 0.352), 168: (0.283, 0.373), 336: (0.292, 0.382), 720: (0.289, 0.377),
                   960: (0.299, 0.387)},
}

# Stretch goal: NLinear, ETTh1 univariate H=720 (lookback 336, the newer protocol of horizons 96..720).
NLINEAR_ETTH1_S_720 = (0.080, 0.226)


def s4(dataset: str, setting: str, horizon: int) -> tuple[float, float] | None:
    """S4's (mse, mae) for this cell, or None where the paper has no number."""
    return S4.get((dataset, setting), {}).get(horizon)
