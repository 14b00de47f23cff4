"""NeuralForecaster: the trainer and the streaming state shared by the eSSM and LSTM forecasters.

A subclass only says which net to build (`_build_net`). The net maps (batch, L, n_in) to
(batch, L, horizon, n_out) causally and has `initial_state / step / prefill`.

Training (convolution view): random windows of `2 * lookback` rows, loss on every position
after a burn-in of `lookback // 2`, so each window yields many examples and the model learns to
forecast from a warmed-up state -- the state it carries when streaming. Inputs are scaled with
the train-set standard scaler; with `relative=True` the net forecasts the change from the
current (scaled) value, a position-wise trick that has the same streaming form, and with
`difference=True` it reads first differences (`tsessm.nn.Differenced`), so the forecast
follows the level of the series instead of the train split's.
"""
from __future__ import annotations

import copy
import math
import numbers
import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tsessm.checks import positive_int
from tsessm.data import standard_stats
from tsessm.forecasters.base import BaseForecaster
from tsessm.forecasters.linear import ridge
from tsessm.nn.channels import ChannelIndependent
from tsessm.nn.differenced import Differenced
from tsessm.nn.rescaled import Rescaled
from tsessm.nn.engine import compile_engine
from tsessm.nn.head import Positions

# Chunks shorter than this are absorbed step by step; longer ones by one prefill (same state).
PREFILL_MIN_ROWS = 16
# Backtests and validation make forecasts in pieces of at most this many values (rows x horizon x
# targets, ~128 MB as float32), so a long horizon on a long multivariate series fits in memory.
FORECAST_CHUNK_VALUES = 32_000_000
# ... and windowed forecasts at most this many windows at a time: bigger batches are slower on a
# CPU (ETTh1 OT test, H=24: 256 windows a batch 0.94 s, all 2 857 in one 4.6 s).
WINDOWS_PER_BATCH = 256
# The linear skip path's ridge penalty (on scaled values, as LinearForecaster's default).
LINEAR_SKIP_ALPHA = 1.0
# The known-ahead inputs' weights learn at this multiple of `lr`.
FUTURE_LR_FACTOR = 50


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> CUDA when present, else CPU; anything else must name a torch device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use 'auto' or 'cpu'")
    return resolved


# The arguments every neural forecaster shares, written once for their docstrings.
SHARED_ARGS_DOC = """\
        horizon: steps forecast at once.
        target: column name(s) to forecast; None = every column. Other columns are inputs (MS).
        lookback: history one training example warms up on; the windowed backtest sees this many rows.
{net}
        lr, epochs, batch_size, patience: training; AdamW with warm-up and cosine decay,
            early stopping after `patience` epochs without validation improvement.
        steps_per_epoch: optimizer steps per epoch; None = a quarter of the distinct windows
            (10 to 200 batches).
        loss_positions: score training at this many positions after the windows' burn-in, one
            random draw per batch (shared by its windows); None, or at least the positions there
            are, = every position; no effect on a bidirectional eSSM (it trains on window ends).
            The head runs at those positions only, so on long horizons with many targets (where
            the head is most of the cost) a training step is several times cheaper.
        validation_fraction: tail of `y` held out for early stopping when no `y_val` is given.
        relative: forecast the change from the current value (a streaming-safe normalisation).
        linear_skip: 0 (off), or a window of that many rows (at most `lookback`) read by a linear
            skip path: the forecast is the last value plus NLinear's ridge map of the window's
            change from it (fitted in closed form on the train rows) plus the net's correction,
            so the model contains the linear one and starts from it (needs relative=True). The
            last `linear_skip` target values are kept in the streaming state.
        channel_independent: forecast every column as a series of its own with one shared net (the
            channel independence of PatchTST and DLinear); needs every column to be a target and no
            other inputs (setting M). A training window then costs as much as one per column.
        revin: 0 (off), or a span in rows: a causal, streaming RevIN. The net reads the differences
            divided by their trailing scale (the root of their exponential moving mean square, pandas'
            `ewm(span=revin)`) and its forecast change is multiplied by the scale at the origin, so the
            model is scale-equivariant; the moving average is part of the state (`tsessm.nn.rescaled`).
            Needs difference=True and relative=True.
        difference: read first differences x_t - x_{{t-1}} instead of levels; with `relative` the
            forecast then follows the series' level wherever it drifts (see `tsessm.nn.Differenced`).
        missing: "error", "ffill" or "interpolate" for gaps and NaN in the input.
        freq: the pandas offset alias of the series' frequency ("MS", "QS-OCT", "B", "h", ...);
            None infers it (`pd.infer_freq`).
        future_covariates: columns of `X` known ahead (a plan, a forecast): `predict(fh, X)` takes
            their values at the forecast steps. Other columns of `X` are past inputs.
        calendar: known-ahead features made from the timestamps (`tsessm.calendar`), e.g.
            ["hour", "dayofweek"] or {{"month": "onehot", "holiday": "US"}}.
        device: "auto" (CUDA when present), "cpu", "cuda", ...
        callbacks: callables, each called after every epoch with that epoch's log entry
            ({{"epoch", "train_loss", "val_loss"}}), e.g. to report to a pruner; not saved with the model.
        verbose: 0 silences the progress bar.
        random_state: seed; the same seed gives identical predictions on CPU.
"""


class NeuralForecaster(BaseForecaster):
    """Trainer, scaler and recurrent state for causal sequence-to-forecast nets."""

    _LEGACY_DEFAULTS = {"difference": False}  # files from before `difference` hold level-input nets
    _UNSAVED_PARAMS = ("callbacks",)
    WINDOWS_DEPEND_ON_LOOKBACK = True

    # ----- what subclasses provide -------------------------------------------------------
    def _build_net(self, n_in: int, n_out: int) -> nn.Module:
        raise NotImplementedError

    def _param_groups(self, net: nn.Module) -> list[dict]:
        return [{"params": list(net.parameters())}]

    def _make_net(self, targets: list[int], n_in: int) -> nn.Module:
        """The subclass's net of `n_in` input columns forecasting the columns `targets` (one net per
        channel when `channel_independent`), rescaled by the differences' trailing scale when
        `revin` (a causal RevIN), fed first differences when `difference=True`."""
        n_out = len(targets)
        net = ChannelIndependent(self._build_net(1, 1), n_in) if self._channel_independent() else \
            self._build_net(n_in, n_out)
        if getattr(self, "revin", 0):
            net = Rescaled(net, self.revin, targets)
        return Differenced(net) if self.difference else net

    def _channel_independent(self) -> bool:
        return getattr(self, "channel_independent", False)

    @property
    def _sees_future(self) -> bool:
        """A non-causal (bidirectional) net: trained and validated on window ends only."""
        return not self.can_stream

    # ----- checks ------------------------------------------------------------------------
    def _check_params(self) -> None:
        super()._check_params()
        if self.steps_per_epoch is not None:
            positive_int("steps_per_epoch", self.steps_per_epoch)
        for name in ("lookback", "epochs", "batch_size", "patience"):
            positive_int(name, getattr(self, name))
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.validation_fraction, (int, float)) or not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        for name in ("difference", "channel_independent"):
            if not isinstance(getattr(self, name, False), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        skip = getattr(self, "linear_skip", 0)
        if isinstance(skip, bool) or not isinstance(skip, int) or not 0 <= skip <= self.lookback:
            raise ValueError(f"linear_skip must be 0 or a window of at most lookback={self.lookback} rows, "
                             f"got {skip!r}")
        if getattr(self, "loss_positions", None) is not None:
            positive_int("loss_positions", self.loss_positions)
        revin = getattr(self, "revin", 0)
        if isinstance(revin, bool) or not isinstance(revin, numbers.Integral) or revin < 0:
            raise ValueError(f"revin must be 0 (off) or the span in rows of the trailing scale, got {revin!r}")
        if revin and not (self.difference and self.relative):
            raise ValueError("revin needs difference=True and relative=True (it scales the differences the net reads "
                             "and the change it forecasts)")
        if skip and not self.relative:
            raise ValueError("linear_skip needs relative=True (the skip path forecasts from the last value)")
        if self.callbacks is not None and not (isinstance(self.callbacks, (list, tuple))
                                               and all(callable(c) for c in self.callbacks)):
            raise TypeError(f"callbacks must be a list of callables (each called with the epoch's log entry), "
                            f"got {self.callbacks!r}")
        resolve_device(self.device)  # raises on an unknown device string
        # A throw-away net checks the architecture's arguments (the net's own checks name them);
        # its random init must not move the caller's random state.
        with torch.random.fork_rng(devices=[]):
            self._make_net([0], 1)

    def _min_length(self) -> int:
        return self.lookback + self.horizon + 1

    # ----- data helpers ------------------------------------------------------------------
    def _scale(self, values: np.ndarray) -> np.ndarray:
        return scaled_rows(values, self.mean_, self.std_)

    def _unscale_targets(self, scaled: np.ndarray) -> np.ndarray:
        idx = self.target_idx_
        return scaled * self.std_[idx] + self.mean_[idx]

    def _tensor(self, array: np.ndarray) -> Tensor:
        return torch.as_tensor(array, device=self.device_)

    def _run(self, x: Tensor, net: nn.Module | None = None, positions: Positions = None) -> Tensor:
        """Convolution view plus the relative anchor: x (B, L, C) -> (B, L, H, k) scaled, or
        (B, P, H, k) at `positions` (the head runs there only)."""
        out = (net or self.net_)(x, positions)
        return self._anchor(out, x if positions is None else x[:, positions])

    def _anchor(self, out: Tensor, x: Tensor) -> Tensor:
        """Add the current scaled target value to the net's output (relative=True)."""
        return out + x[..., self.target_idx_].unsqueeze(-2) if self.relative else out

    # ----- training ----------------------------------------------------------------------
    def _fit(self, values: np.ndarray, target_idx: list[int], val_values: np.ndarray | None) -> None:
        n_train = len(values) if val_values is not None else self.train_rows(len(values))
        history = values if val_values is None else np.vstack([values, val_values])
        self.mean_, self.std_ = standard_stats(values[:n_train])
        self.fit_scaled([(self._scale(history), n_train)], target_idx)
        self._reset_stream(self._scale(values))
        self.__dict__.pop("linear_window_", None)
        if self._linear_skip():
            self._keep_window(self._scale(values[-self.linear_skip :]))

    def train_rows(self, n_rows: int) -> int:
        """Of a series of `n_rows`, the rows to train on when the tail `validation_fraction` is held out for early stopping
        (all rows when that tail would be too short to score or leave too little to train)."""
        n_val = int(n_rows * self.validation_fraction)
        return n_rows - n_val if n_val > self.horizon and n_rows - n_val >= self._min_length() else n_rows

    def _calibration_start(self, n_rows: int) -> int:
        """The intervals calibrate on the tail held out for early stopping, when there is one."""
        n_train = self.train_rows(n_rows)
        return n_train - 1 if n_train < n_rows else super()._calibration_start(n_rows)

    def fit_scaled(self, segments: list[tuple[np.ndarray, int]], target_idx: list[int]) -> None:
        """Build and train the net on scaled series: each segment is (xs (T_i, C) float32, n_train_i);
        rows past n_train_i are validation rows of that series. Sets `net_`, `device_`,
        `target_idx_` and `history_`; the scaler and the streaming state are the caller's."""
        n_columns = segments[0][0].shape[1]
        if self._channel_independent() and list(target_idx) != list(range(n_columns)):
            raise ValueError(f"channel_independent=True forecasts every column from itself: it needs every input "
                             f"column as a target, in the data's column order, and no other inputs (setting M); "
                             f"here {n_columns - len(target_idx)} of the {n_columns} input columns are not targets "
                             f"(other columns, future covariates or calendar features) or the targets are reordered")
        self.device_ = resolve_device(self.device)
        self.target_idx_ = list(target_idx)
        self._fit_linear_skip(segments)
        seed = self.random_state if self.random_state is not None else int(np.random.SeedSequence().entropy % 2**31)
        seed = _same_on_every_rank(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net_ = self._make_net(self.target_idx_, segments[0][0].shape[1]).to(self.device_)
            if self.relative:
                # Start from the last-value forecast (a zero change): training learns corrections
                # to a sane baseline instead of first undoing a random head.
                nn.init.zeros_(self.net_.head.weight)
                nn.init.zeros_(self.net_.head.bias)
            self.history_ = self._train(segments)
        self.net_.eval()

    def _targets_after(self, x_all: Tensor, rows: Tensor) -> Tensor:
        """The targets at rows t+1..t+H for every row t in `rows` (any shape): (*rows.shape, H, k).

        Gathered per batch from the scaled rows instead of one (T, H, k) table, which would take
        T x H x k values (2.6 GB as float64 for ETTm1 M at H=672) before training starts. Callers
        only ask for rows whose next H rows lie in the same series.
        """
        steps = torch.arange(1, self.horizon + 1, device=x_all.device)
        return x_all[rows[..., None] + steps][..., self.target_idx_]

    def _train(self, segments: list[tuple[np.ndarray, int]]) -> list[dict]:
        H = self.horizon
        window = min(2 * self.lookback, min(n_train for _, n_train in segments) - H)
        burn_in = min(self.lookback // 2, window - 1)
        if self._sees_future:  # position t would read its own targets: learn from the last one only
            window, burn_in = self.lookback, self.lookback - 1
        x_all = self._tensor(np.concatenate([xs for xs, _ in segments]))
        # Valid window starts: the window and its targets stay inside one series' train rows.
        offsets_of = np.cumsum([0] + [len(xs) for xs, _ in segments])
        valid = self._tensor(np.concatenate(
            [o + np.arange(n_train - H - window + 1) for o, (_, n_train) in zip(offsets_of, segments)]
        ))
        val_spans = [(o + n, o + len(xs) - H) for o, (xs, n) in zip(offsets_of, segments) if len(xs) - H > n]
        batches = self.steps_per_epoch or min(200, max(10, math.ceil(len(valid) / self.batch_size / 4)))
        offsets = torch.arange(window, device=self.device_)
        # Data parallel (torchrun): every rank draws the same global batch and trains on its
        # own shard; DDP averages the gradients, so a step equals the single-process step.
        rank, world = _rank_and_world()
        if self.batch_size % world:
            raise ValueError(f"batch_size={self.batch_size} must be divisible by the {world} processes")
        net = nn.parallel.DistributedDataParallel(self.net_) if world > 1 else self.net_

        groups = self._param_groups(self.net_)
        self.__dict__.pop("future_weight_", None)  # a refit without known-ahead inputs keeps none
        if self._future_idx():  # the known-ahead inputs' weights: (H, F, k), zero = no effect at first
            self.future_weight_ = nn.Parameter(x_all.new_zeros(H, len(self._future_idx()), len(self.target_idx_)))
            # a linear map whose right size is O(1): a faster rate lets it arrive within a short fit
            groups.append({"params": [self.future_weight_], "lr": FUTURE_LR_FACTOR * self.lr, "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups, lr=self.lr, weight_decay=0.01)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(self.epochs * batches))
        best, best_loss, bad_epochs, log = None, math.inf, 0, []
        if self._linear_skip() and val_spans:  # the linear model itself: kept unless training beats it
            self.net_.eval()
            best, best_loss = copy.deepcopy(self._trained_weights()), self._validation_loss(x_all, offsets_of, val_spans)
        bar = tqdm(range(self.epochs), desc=type(self).__name__, disable=not self.verbose, leave=False)
        for epoch in bar:
            self.net_.train()
            starts = valid[torch.randint(0, len(valid), (batches * self.batch_size,), device=self.device_)]
            losses = []
            for batch in starts.split(self.batch_size):
                rows = (batch[:, None] + offsets)[rank::world]  # (B / world, window)
                positions = self._loss_positions(burn_in, window)
                if positions is None:
                    ahead = rows[:, burn_in:]
                    pred = self._run(x_all[rows], net)[:, burn_in:]
                else:
                    ahead = rows[:, positions]
                    pred = self._run(x_all[rows], net, positions)
                pred = pred + self._future_term(x_all, ahead) + self._linear_term(x_all, ahead)
                loss = nn.functional.mse_loss(pred, self._targets_after(x_all, ahead))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training diverged: loss is {loss.item()} at epoch {epoch + 1}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.net_.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                losses.append(_mean_over_ranks(loss.detach()))
            entry = {"epoch": epoch + 1, "train_loss": float(np.mean(losses))}
            if val_spans:
                entry["val_loss"] = self._validation_loss(x_all, offsets_of, val_spans)
            log.append(entry)
            bar.set_postfix({k: f"{v:.4f}" for k, v in entry.items() if k != "epoch"})
            for callback in self.callbacks or ():
                callback(entry)
            score = entry.get("val_loss", entry["train_loss"])
            if score < best_loss:
                best, best_loss, bad_epochs = copy.deepcopy(self._trained_weights()), score, 0
            else:
                bad_epochs += 1
                if val_spans and bad_epochs >= self.patience:
                    if self.verbose:  # the bar stops short of `epochs`: say why
                        bar.write(f"{type(self).__name__}: early stopping after epoch {epoch + 1}: no validation "
                                  f"improvement for {self.patience} epochs; keeping epoch {epoch + 1 - bad_epochs}")
                    break
        if best is not None:
            self.net_.load_state_dict(best["net"])
        if self._future_idx():
            self.future_weight_ = (best or self._trained_weights())["future"].detach().cpu().numpy()
        return log

    def _loss_positions(self, burn_in: int, window: int) -> Tensor | None:
        """The window positions a training batch is scored at: `loss_positions` of those after
        the burn-in, drawn anew for every batch (sorted); None = all of them."""
        n = getattr(self, "loss_positions", None)
        if n is None or n >= window - burn_in:
            return None
        return burn_in + torch.randperm(window - burn_in, device=self.device_)[:n].sort().values

    def _trained_weights(self) -> dict:
        return {"net": self.net_.state_dict(), "future": getattr(self, "future_weight_", None)}

    def _future_idx(self) -> list[int]:
        return getattr(self, "future_idx_", None) or []

    def _future_term(self, x: Tensor, rows: Tensor) -> Tensor | float:
        """What the known-ahead inputs (future covariates, calendar features) at rows t+1..t+H
        add to the scaled forecast made at each row t of x (T, C): (*rows.shape, H, k); 0 without
        them. Callers only ask for rows with H rows after them in x."""
        idx = self._future_idx()
        if not idx:
            return 0.0
        steps = torch.arange(1, self.horizon + 1, device=x.device)
        known = x[rows[..., None] + steps][..., idx]  # (*rows, H, F)
        return torch.einsum("...hf,hfk->...hk", known, torch.as_tensor(self.future_weight_, device=x.device))

    def _future_effect(self, future: np.ndarray, steps: np.ndarray) -> np.ndarray:
        idx = self._future_idx()
        known = (future - self.mean_[idx]) / self.std_[idx]
        scaled = np.einsum("nf,nfk->nk", known, np.asarray(self.future_weight_)[steps - 1])
        return scaled * self.std_[self.target_idx_]

    @torch.no_grad()
    def _validation_loss(self, x_all: Tensor, offsets_of: np.ndarray, val_spans: list[tuple[int, int]]) -> float:
        """One pass over each series' whole history (its streaming state), loss on its validation rows."""
        self.net_.eval()
        total, count = 0.0, 0
        for start, stop in val_spans:
            begin = int(offsets_of[offsets_of <= start].max())  # the series' first row
            if self._sees_future:  # windowed: each validation origin sees its lookback rows only
                origins = torch.arange(max(start, begin + self.lookback - 1), stop, device=self.device_)
                pred = self._window_forecasts(x_all, origins, self.lookback)
                target = self._targets_after(x_all, origins)
            else:
                # (rows up to the series' end: the known-ahead inputs of the last origins lie there)
                pred = self._stream_forecasts(x_all[begin:stop + self.horizon], torch.arange(start - begin, stop - begin))
                target = self._targets_after(x_all, torch.arange(start, stop, device=self.device_))
            total += nn.functional.mse_loss(pred, target, reduction="sum").item()
            count += pred.numel()
        return total / count

    def _rows_per_chunk(self, rows_per_forecast: int) -> int:
        """How many forecasts of `rows_per_forecast` net positions each fit in FORECAST_CHUNK_VALUES."""
        return max(1, FORECAST_CHUNK_VALUES // (rows_per_forecast * self.horizon * len(self.target_idx_)))

    @torch.no_grad()
    def _window_forecasts(self, x: Tensor, origins: Tensor, lookback: int) -> Tensor:
        """Scaled forecasts at `origins`, each from rows [t - lookback + 1, t] of x (T, C) only: (N, H, k)."""
        offsets = torch.arange(-lookback + 1, 1, device=x.device)
        origins = torch.as_tensor(origins, device=x.device)
        if len(origins) == 0:
            return x.new_zeros((0, self.horizon, len(self.target_idx_)))
        # The head runs at each window's last position only; the body reads the whole window.
        last = slice(lookback - 1, lookback)
        base = torch.cat([self._run(x[batch[:, None] + offsets], positions=last)[:, 0]
                          for batch in origins.split(min(WINDOWS_PER_BATCH, self._rows_per_chunk(1)))])
        return base + self._future_term(x, origins) + self._linear_term(x, origins)

    @torch.no_grad()
    def _stream_forecasts(self, x: Tensor, rows: Tensor | np.ndarray) -> Tensor:
        """Scaled forecasts at `rows` of one pass over x (T, C) from the zero state: (N, H, k).

        The pass goes chunk by chunk through `prefill`, carrying the state (the same function as
        one forward over x), so memory holds one chunk's forecasts, never T x H x k of them.
        """
        wanted, back = torch.unique(torch.as_tensor(rows, device=x.device), return_inverse=True)
        if len(wanted) == 0:
            return x.new_zeros((0, self.horizon, len(self.target_idx_)))
        if wanted[0] < 0 or wanted[-1] >= len(x):
            raise ValueError(f"forecast rows must lie in [0, {len(x)}), got {int(wanted[0])}..{int(wanted[-1])}")
        step = self._rows_per_chunk(1)
        state, picked = None, []
        for start in range(0, int(wanted[-1]) + 1, step):
            xs = x[start : start + step]
            inside = wanted[(wanted >= start) & (wanted < start + len(xs))] - start
            out, state = self.net_.prefill(xs[None], state, inside)  # the head runs at the wanted rows only
            picked.append(self._anchor(out[0], xs[inside]))
        return (torch.cat(picked) + self._future_term(x, wanted) + self._linear_term(x, wanted))[back]

    # ----- streaming state ---------------------------------------------------------------
    @torch.no_grad()
    def _reset_stream(self, xs: np.ndarray) -> None:
        out, self.state_ = self._advance(self._tensor(xs), None)
        self.last_out_ = out.cpu().numpy()

    @torch.no_grad()
    def _advance(self, xs: Tensor, state: list[Tensor] | None) -> tuple[Tensor, list[Tensor]]:
        """Absorb scaled rows xs (L, C) of one series from `state` (zero if None).

        Returns the anchored forecast after the last row, (H, k), and the new state (batch 1).
        Long chunks go through one prefill, short ones step by step: the same state either way.
        """
        if state is None or len(xs) >= PREFILL_MIN_ROWS:
            out, state = self.net_.prefill(xs[None], state, slice(len(xs) - 1, None))
            out = out[0, 0]
        else:
            for x_t in xs:
                out, state = self.net_.step(x_t[None], state)
            out = out[0]
        return self._anchor(out, xs[-1]), state

    def _update(self, values: np.ndarray) -> None:
        if len(values) == 1:  # one row (a stream, `observe`): the numpy engine, no module calls
            self._step_row(self._scale(values[0]))
        else:
            self._update_chunk(values)
        if self._linear_skip():
            self._keep_window(self._scale(values[-self.linear_skip :]))

    @torch.no_grad()
    def _update_chunk(self, values: np.ndarray) -> None:
        out, self.state_ = self._advance(self._tensor(self._scale(values)), self.state_)
        self.last_out_ = out.cpu().numpy()

    def _engine(self):
        """The net's numpy recurrent engine, compiled once per fitted net (`tsessm.nn.engine`)."""
        cached = self.__dict__.get("_engine_cache")
        if cached is None or cached[0] is not self.net_:
            cached = self._engine_cache = (self.net_, compile_engine(self.net_))
        return cached[1]

    def _step_row(self, x: np.ndarray) -> None:
        """Advance the state by one scaled row x (C,) float32 through the engine (equal to `net.step`)."""
        on_cpu = self.device_.type == "cpu"
        # The engine's own arrays from the last row, while `state_` is still what it returned.
        torch_state, state = self.__dict__.get("_numpy_state", (None, None))
        if torch_state is not self.state_:
            state = [s.numpy() if on_cpu else s.cpu().numpy() for s in self.state_]
        out, state = self.step_scaled(x[None], state)
        self.state_ = [torch.from_numpy(s) if on_cpu else torch.from_numpy(s).to(self.device_) for s in state]
        self._numpy_state = (self.state_, state)
        self.last_out_ = out[0]

    # ----- the scaled-series interface: what a global model over many series (the panel) drives
    def absorb_scaled(self, xs: np.ndarray, state: list[Tensor] | None) -> tuple[Tensor, list[Tensor]]:
        """Absorb one series' scaled rows xs (L, C) float32 from `state` (None: the zero state).
        Returns (the forecast after the last row (H, k), scaled, on `device_`; the new state)."""
        return self._advance(self._tensor(xs), state)

    def one_pass_scaled(self, xs: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """One pass over one series' scaled rows xs (T, C) from the zero state: the scaled
        forecasts at rows `origins`, (len(origins), H, k)."""
        return self._stream_forecasts(self._tensor(xs), origins).cpu().numpy()

    def step_scaled(self, x: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One engine step of n series: scaled rows x (n, C) float32 -> (anchored forecasts (n, H, k),
        new state), the numpy twin of `net.step` followed by `_anchor`."""
        out, state = self._engine().step(x, state)
        return (out + x[:, None, self.target_idx_] if self.relative else out), state

    def _predict(self) -> np.ndarray:
        if self._linear_skip():
            return self._unscale_targets(self.last_out_ + self.linear_out_)
        return self._unscale_targets(self.last_out_)

    # ----- the linear skip path ----------------------------------------------------------
    def _linear_skip(self) -> int:
        return getattr(self, "linear_skip", 0) or 0

    def _fit_linear_skip(self, segments: list[tuple[np.ndarray, int]]) -> None:
        """NLinear's ridge map on every train window of every target, scaled values: the change
        from the window's last value -> the next H changes; one map shared by the targets."""
        self.__dict__.pop("linear_coef_", None)
        L = self._linear_skip()
        if not L:
            return
        def pairs():
            for xs, n_train in segments:
                for j in self.target_idx_:
                    windows = np.lib.stride_tricks.sliding_window_view(xs[:n_train, j].astype(np.float64),
                                                                       L + self.horizon)
                    last = windows[:, L - 1 : L]
                    yield windows[:, :L] - last, windows[:, L:] - last

        coef, intercept, _ = ridge(pairs(), LINEAR_SKIP_ALPHA)
        self.linear_coef_ = coef.astype(np.float32)  # (L, H)
        self.linear_intercept_ = intercept.astype(np.float32)  # (H,)

    def _linear_term(self, x: Tensor, rows: Tensor) -> Tensor | float:
        """The skip path's change from the last value at each row t of x (T, C), from rows
        t-L+1..t (the first row repeated before the series starts): (*rows.shape, H, k)."""
        L = self._linear_skip()
        if not L:
            return 0.0
        back = torch.arange(L - 1, -1, -1, device=x.device)
        window = x[(rows[..., None] - back).clamp_min(0)][..., self.target_idx_]  # (*rows, L, k)
        change = window - window[..., -1:, :]
        coef = torch.as_tensor(self.linear_coef_, device=x.device, dtype=x.dtype)
        bias = torch.as_tensor(self.linear_intercept_, device=x.device, dtype=x.dtype)
        return torch.einsum("...lk,lh->...hk", change, coef) + bias[:, None]

    def _keep_window(self, scaled_rows: np.ndarray) -> None:
        """Append scaled rows (n, C) to the skip path's window and recompute its term (H, k)."""
        L = self._linear_skip()
        targets = scaled_rows[:, self.target_idx_]
        kept = getattr(self, "linear_window_", None)
        window = targets if kept is None else np.vstack([kept, targets])
        if len(window) < L:  # fewer rows than the window: the first is repeated, as in the backtests
            window = np.vstack([np.repeat(window[:1], L - len(window), axis=0), window])
        self.linear_window_ = window[-L:].astype(np.float32)
        change = self.linear_window_ - self.linear_window_[-1]
        self.linear_out_ = np.einsum("lk,lh->hk", change, self.linear_coef_) + self.linear_intercept_[:, None]

    # ----- backtests ---------------------------------------------------------------------
    def _forecast_windows(self, values: np.ndarray, origins: np.ndarray, lookback: int) -> np.ndarray:
        forecasts = self._window_forecasts(self._tensor(self._scale(values)), origins, lookback)
        return self._unscale_targets(forecasts.cpu().numpy())

    def _forecast_one_pass(self, values: np.ndarray, origins: np.ndarray | None = None) -> np.ndarray:
        rows = np.arange(len(values)) if origins is None else origins
        forecasts = self._stream_forecasts(self._tensor(self._scale(values)), rows)
        return self._unscale_targets(forecasts.cpu().numpy())

    # ----- persistence -------------------------------------------------------------------
    def _get_fitted_state(self) -> dict:
        state = super()._get_fitted_state()
        state["net_"] = {k: v.detach().cpu() for k, v in self.net_.state_dict().items()}
        state["state_"] = _to_cpu(self.state_) if getattr(self, "state_", None) is not None else None
        state["n_in_"] = self.net_.n_in
        state.pop("device_", None)
        return state

    def _set_fitted_state(self, state: dict) -> None:
        state = dict(state)
        # trained on a GPU, loaded where there is none: run on the CPU (the parameter stays as saved)
        gpu_missing = "cuda" in str(self.device) and not torch.cuda.is_available()
        self.device_ = resolve_device("auto" if gpu_missing else self.device)
        weights = state.pop("net_")
        self.target_idx_ = state["target_idx_"]
        net = self._make_net(state["target_idx_"], state.pop("n_in_"))
        net.load_state_dict(weights)
        self.net_ = net.to(self.device_).eval()
        if state.get("state_") is not None:
            state["state_"] = _to_device(state["state_"], self.device_)
        super()._set_fitted_state(state)


def scaled_rows(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Rows (..., C) standardised by a per-column scaler, as the nets read them: float32."""
    return ((values - mean) / std).astype(np.float32)


def warmup_cosine(total_steps: int, warmup_fraction: float = 0.1):
    """LR factor per step: linear warm-up over the first 10 % of steps, then cosine decay to 0."""
    warmup = max(1, round(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _rank_and_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _same_on_every_rank(seed: int) -> int:
    """Rank 0's seed everywhere, so all ranks sample the same windows."""
    if _rank_and_world()[1] == 1:
        return seed
    box = [seed]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _mean_over_ranks(loss: Tensor) -> float:
    if _rank_and_world()[1] > 1:
        loss = loss.clone()
        torch.distributed.all_reduce(loss)
        loss /= torch.distributed.get_world_size()
    return loss.item()


def _to_cpu(state):
    return [s.detach().cpu() for s in state] if isinstance(state, list) else state.detach().cpu()


def _to_device(state, device):
    return [s.to(device) for s in state] if isinstance(state, list) else state.to(device)
