"""Recurrent states of many series at once.

A net's state is a list of tensors whose first dimension is the batch (one row per series).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def concat_states(states: Sequence[list[Tensor]]) -> list[Tensor]:
    """Stack the states of several batches along the batch dimension."""
    return [torch.cat(parts) for parts in zip(*states)]


def select_states(state: list[Tensor], rows: Sequence[int]) -> list[Tensor]:
    """The state rows of the given series."""
    index = torch.as_tensor(rows, device=state[0].device)
    return [s.index_select(0, index) for s in state]


def set_states(state: list[Tensor], rows: Sequence[int], new: list[Tensor]) -> list[Tensor]:
    """A copy of `state` with the given rows replaced by `new` (the other rows untouched)."""
    index = torch.as_tensor(rows, device=state[0].device)
    return [s.index_copy(0, index, n) for s, n in zip(state, new)]
