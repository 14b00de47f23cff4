"""scikit-learn-style forecasters sharing one contract (fit / predict / update / save / load)."""
from tsessm.forecasters.base import BaseForecaster
from tsessm.forecasters.essm import ESSMForecaster
from tsessm.forecasters.naive import NaiveForecaster

__all__ = ["BaseForecaster", "ESSMForecaster", "NaiveForecaster"]
