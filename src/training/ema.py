"""An exponential moving average of the model's weights (Polyak averaging), as DeiT and timm keep.

The average is a copy of the model whose floating-point parameters and buffers follow the
model's after every optimizer step, in one foreach ``lerp`` over all of them. The decay warms up
(as TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``): early on the average forgets
quickly, so a short run's average is not dragged down by its random start. The update count is
kept on the CPU: torch's ``AveragedModel`` keeps it on the device and reads it back at every
update, which makes the CPU wait for the GPU once a step.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """After every optimizer step: ema = d * ema + (1 - d) * weights, with
    d = min(decay, (1 + n) / (10 + n)) at the n-th update; the first update copies the weights.
    Once warmed up it averages over roughly the last 1 / (1 - decay) steps."""

    def __init__(self, model: nn.Module, decay: float):
        self.source = model
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs = [
            (mine, theirs)
            for mine, theirs in zip(_float_tensors(self.module), _float_tensors(model))
        ]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        averaged, current = [a for a, _ in self._pairs], [c for _, c in self._pairs]
        if self.updates == 0:
            torch._foreach_copy_(averaged, current)
        else:
            torch._foreach_lerp_(averaged, current, 1.0 - self.current_decay())
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """The layout of torch's ``AveragedModel`` (``module.*`` and ``n_averaged``)."""
        state = {f"module.{k}": v for k, v in self.module.state_dict().items()}
        return {**state, "n_averaged": torch.tensor(self.updates)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(
            {k.removeprefix("module."): v for k, v in state.items() if k.startswith("module.")}
        )
        self.updates = int(state["n_averaged"])


def _float_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Parameters and buffers that can be averaged (not integer counters)."""
    tensors = [*model.parameters(), *model.buffers()]
    return [t.detach() for t in tensors if t.is_floating_point()]
