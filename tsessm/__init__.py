"""tsessm: streaming time-series forecasting with eSSM, an efficient diagonal state space model."""
from tsessm.errors import StreamingNotSupported
from tsessm.forecasters import (
    ARIMAForecaster,
    BaseForecaster,
    ESSMForecaster,
    LSTMForecaster,
    NaiveForecaster,
    PanelForecaster,
)

__version__ = "0.2.0"
__all__ = [
    "ARIMAForecaster", "BaseForecaster", "ESSMForecaster", "LSTMForecaster", "NaiveForecaster",
    "PanelForecaster", "StreamingNotSupported", "__version__",
]
