"""tsessm: streaming time-series forecasting with eSSM, an efficient diagonal state space model."""
from tsessm.errors import StreamingNotSupported

__version__ = "0.1.0"
__all__ = ["StreamingNotSupported", "__version__"]
