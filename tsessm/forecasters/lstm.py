"""LSTMForecaster: the recurrent baseline, trained and streamed by the shared NeuralForecaster."""
from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from tsessm.forecasters.neural import SHARED_ARGS_DOC, NeuralForecaster
from tsessm.nn.lstm_net import LSTMNet


class LSTMForecaster(NeuralForecaster):
    __doc__ = """Forecast the next `horizon` steps with a causal LSTM (`tsessm.nn.lstm_net.LSTMNet`).

    Same training, scaling, streaming state and backtests as `ESSMForecaster`; only the net
    differs. `update` advances the LSTM's (h, c) state without refitting.

    Args:
""" + SHARED_ARGS_DOC.format(net="""\
        d_model, n_layers: width of the encoder/LSTM/head and number of stacked LSTM layers.
        dropout: between LSTM layers (no effect with one layer).""")

    def __init__(
        self,
        horizon: int = 24,
        target=None,
        lookback: int = 96,
        d_model: int = 64,
        n_layers: int = 2,
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

    def _build_net(self, n_in: int, n_out: int) -> nn.Module:
        return LSTMNet(
            n_in, n_out, self.horizon, d_model=self.d_model, n_layers=self.n_layers, dropout=self.dropout
        )
