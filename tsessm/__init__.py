"""tsessm: streaming time-series forecasting with eSSM, an efficient diagonal state space model."""
from tsessm.errors import StreamingNotSupported
from tsessm.forecasters import BaseForecaster, ESSMForecaster, NaiveForecaster

__version__ = "0.1.0"
__all__ = ["BaseForecaster", "ESSMForecaster", "NaiveForecaster", "StreamingNotSupported", "__version__"]
