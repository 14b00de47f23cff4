"""ESSMForecaster: eSSM trained in convolution mode, forecasting online in recurrent mode."""
from __future__ import annotations

from typing import Any, Sequence

from dataclasses import fields

from torch import nn

from tsessm.forecasters.neural import SHARED_ARGS_DOC, NeuralForecaster
from tsessm.nn import ESSMConfig, ESSMNet

# The eigenvalues and steps learn at a gentler rate and without weight decay (as in S4).
_SSM_DYNAMICS = ("lambda_re_raw", "lambda_im", "log_dt")
_SSM_LR_CAP = 1e-3


class ESSMForecaster(NeuralForecaster):
    __doc__ = """Forecast the next `horizon` steps with a deep causal eSSM.

    Args:
""" + SHARED_ARGS_DOC.format(net="""\
        d_model, n_layers, d_state, n_heads, bidirectional, discretization, init, mixer, dropout:
            the net (`tsessm.nn.ESSMConfig`); mixer "auto" adds a Linear head mixer only when
            n_heads > 1, as the authors' eSSM does. A bidirectional model trains and backtests on
            windows but cannot stream (`can_stream` is False). dt_min, dt_max: range of the initial
            step sizes (slowest and fastest memory: a state forgets at about exp(-dt / 2) per step,
            so dt_min=0.01 remembers ~200 steps, about what the 2 * lookback training windows show).""")

    def __init__(
        self,
        horizon: int = 24,
        target=None,
        lookback: int = 96,
        d_model: int = 64,
        n_layers: int = 2,
        d_state: int = 64,
        n_heads: int = 1,
        bidirectional: bool = False,
        discretization: str = "zoh",
        init: str = "s4d-lin",
        mixer: str = "auto",
        dt_min: float = 1e-2,
        dt_max: float = 1e-1,
        dropout: float = 0.1,
        lr: float = 1e-3,
        epochs: int = 10,
        batch_size: int = 32,
        steps_per_epoch: int | None = None,
        loss_positions: int | None = None,
        patience: int = 3,
        validation_fraction: float = 0.1,
        relative: bool = True,
        linear_skip: int = 0,
        channel_independent: bool = False,
        revin: int = 0,
        difference: bool = True,
        missing: str = "error",
        freq: str | None = None,
        future_covariates: Sequence[str] | None = None,
        calendar: Any = None,
        device: str = "auto",
        callbacks: list | None = None,
        verbose: int = 1,
        random_state: int | None = None,
    ) -> None:
        self.horizon = horizon
        self.target = target
        self.lookback = lookback
        self.d_model = d_model
        self.n_layers = n_layers
        self.d_state = d_state
        self.n_heads = n_heads
        self.bidirectional = bidirectional
        self.discretization = discretization
        self.init = init
        self.mixer = mixer
        self.dt_min = dt_min
        self.dt_max = dt_max
        self.dropout = dropout
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.loss_positions = loss_positions
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.relative = relative
        self.linear_skip = linear_skip
        self.channel_independent = channel_independent
        self.revin = revin
        self.difference = difference
        self.missing = missing
        self.freq = freq
        self.future_covariates = future_covariates
        self.calendar = calendar
        self.device = device
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state

    @property
    def can_stream(self) -> bool:
        """A bidirectional eSSM reads the future of every position: it has no recurrent form."""
        return not self.bidirectional

    def net_config(self) -> ESSMConfig:
        """The net's architecture from this forecaster's parameters (checked by ESSMConfig)."""
        return ESSMConfig(**{f.name: getattr(self, f.name) for f in fields(ESSMConfig)})

    def _build_net(self, n_in: int, n_out: int) -> nn.Module:
        return ESSMNet(n_in, n_out, self.horizon, self.net_config())

    def _param_groups(self, net: nn.Module) -> list[dict]:
        dynamics = [p for n, p in net.named_parameters() if n.rsplit(".", 1)[-1] in _SSM_DYNAMICS]
        rest = [p for n, p in net.named_parameters() if n.rsplit(".", 1)[-1] not in _SSM_DYNAMICS]
        return [
            {"params": rest},
            {"params": dynamics, "lr": min(self.lr, _SSM_LR_CAP), "weight_decay": 0.0},
        ]

    def _set_fitted_state(self, state: dict) -> None:
        if any(name.endswith("ssm.B") and w.ndim == 4 for name, w in state["net_"].items()):
            raise ValueError(
                "this eSSM was saved in model file format 1 (tsessm 0.1.0), whose layer had complex "
                "read-in and read-out weights; the layer of tsessm 0.2 and later (real B and C) cannot "
                "reproduce it exactly. Retrain the model (fit, or `tsessm train`) and save it again"
            )
        super()._set_fitted_state(state)

    def _reset_stream(self, xs) -> None:
        if not self.can_stream:  # no recurrent form: the forecast after fit comes from the last window
            window = self._tensor(xs[-self.lookback :])[None]
            out = self._run(window, positions=slice(window.shape[1] - 1, None))[0, 0]
            self.state_, self.last_out_ = None, out.detach().cpu().numpy()
            return
        super()._reset_stream(xs)
