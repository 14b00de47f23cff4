"""`tsessm serve`: a stateful HTTP service for online forecasting over the stream runner's pieces
(records, adapters, checkpoints). `ForecastService` holds the state; `build_app` puts HTTP in front."""
from tsessm.serve.service import ForecastService, Refused, ServiceSetupError

__all__ = ["ForecastService", "Refused", "ServiceSetupError", "build_app"]


def build_app(*args, **kwargs):
    """tsessm.serve.app.build_app (FastAPI loads only when an app is built)."""
    from tsessm.serve.app import build_app as build

    return build(*args, **kwargs)
