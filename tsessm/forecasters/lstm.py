"""LSTMForecaster: the recurrent baseline, trained and streamed by the shared NeuralForecaster."""
from __future__ import annotations

from torch import nn

from tsessm.forecasters.neural import NeuralForecaster
from tsessm.nn.lstm_net import LSTMNet


class LSTMForecaster(NeuralForecaster):
    """Forecast the next `horizon` steps with a causal LSTM (`tsessm.nn.lstm_net.LSTMNet`).

    Same training, scaling, streaming state and backtests as `ESSMForecaster`; only the net
    differs. `update` advances the LSTM's (h, c) state without refitting.

    Args:
        horizon: steps forecast at once.
        target: column name(s) to forecast; None = every column. Other columns are inputs (MS).
        lookback: history one training example warms up on; the windowed backtest sees this many rows.
        d_model, n_layers: width of the encoder/LSTM/head and number of stacked LSTM layers.
        dropout: between LSTM layers (no effect with one layer).
        lr, epochs, batch_size, patience: training; AdamW with warm-up and cosine decay,
            early stopping after `patience` epochs without validation improvement.
        steps_per_epoch: optimizer steps per epoch; None = a quarter of the distinct windows
            (10 to 200 batches).
        validation_fraction: tail of `y` held out for early stopping when no `y_val` is given.
        relative: forecast the change from the current value (a streaming-safe normalisation).
        difference: read first differences x_t - x_{t-1} instead of levels; with `relative` the
            forecast then follows the series' level wherever it drifts (see `tsessm.nn.Differenced`).
        missing: "error", "ffill" or "interpolate" for gaps and NaN in the input.
        device: "auto" (CUDA when present), "cpu", "cuda", ...
        verbose: 0 silences the progress bar.
        random_state: seed; the same seed gives identical predictions on CPU.
    """

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
        patience: int = 3,
        validation_fraction: float = 0.1,
        relative: bool = True,
        difference: bool = True,
        missing: str = "error",
        device: str = "auto",
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
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.relative = relative
        self.difference = difference
        self.missing = missing
        self.device = device
        self.verbose = verbose
        self.random_state = random_state

    def _build_net(self, n_in: int, n_out: int) -> nn.Module:
        return LSTMNet(
            n_in, n_out, self.horizon, d_model=self.d_model, n_layers=self.n_layers, dropout=self.dropout
        )
