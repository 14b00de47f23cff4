"""scikit-learn-style forecasters sharing one contract (fit / predict / update / save / load)."""
from tsessm.forecasters.arima import ARIMAForecaster
from tsessm.forecasters.base import BaseForecaster
from tsessm.forecasters.essm import ESSMForecaster
from tsessm.forecasters.linear import LinearForecaster
from tsessm.forecasters.lstm import LSTMForecaster
from tsessm.forecasters.naive import NaiveForecaster
from tsessm.forecasters.panel import PanelForecaster

__all__ = ["ARIMAForecaster", "BaseForecaster", "ESSMForecaster", "LinearForecaster", "LSTMForecaster",
           "NaiveForecaster", "PanelForecaster"]
