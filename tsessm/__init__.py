"""tsessm: streaming time-series forecasting with eSSM, an efficient diagonal state space model.

The forecasters load on first use (PEP 562), so `import tsessm` -- and so the `tsessm` command's
help and argument errors -- does not pay for torch and statsmodels.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from tsessm.errors import StreamingNotSupported

__version__ = "0.4.0"
_FORECASTERS = ("ARIMAForecaster", "BaseForecaster", "ESSMForecaster", "LinearForecaster", "LSTMForecaster",
                "NaiveForecaster", "PanelForecaster")
__all__ = [*_FORECASTERS, "StreamingNotSupported", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _FORECASTERS:
        return getattr(import_module("tsessm.forecasters"), name)
    raise AttributeError(f"module 'tsessm' has no attribute {name!r}")
