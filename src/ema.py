"""An exponential moving average of the model's weights (Polyak averaging), as DeiT and timm keep.

torch's ``AveragedModel`` holds the averaged copy and does the bookkeeping; this adds the usual
warmup of the decay (as TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``): early on
the average forgets quickly, so a short run's average is not dragged down by its random start.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class WeightAverage:
    """After every optimizer step: ema = d * ema + (1 - d) * weights, with
    d = min(decay, (1 + n) / (10 + n)) at the n-th update; the first update copies the weights.
    Once warmed up it averages over roughly the last 1 / (1 - decay) steps."""

    def __init__(self, model: nn.Module, decay: float):
        self.source = model
        self.decay = decay
        self.updates = 0
        self.averaged = AveragedModel(model, multi_avg_fn=self._blend, use_buffers=True)

    @property
    def module(self) -> nn.Module:
        """The averaged model, the same architecture as the source (evaluate or save it)."""
        return self.averaged.module

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def _blend(self, averaged: list[torch.Tensor], current: list[torch.Tensor], _count) -> None:
        torch._foreach_lerp_(averaged, current, 1.0 - self.current_decay())

    def update(self) -> None:
        self.averaged.update_parameters(self.source)  # copies on the first call, else _blend
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()  # n_averaged in it counts the updates

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)
        self.updates = int(self.averaged.n_averaged)
