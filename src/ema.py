"""An exponential moving average of the model's weights (Polyak averaging), as DeiT and timm keep.

torch's ``AveragedModel`` does the averaging; this holds it beside the model it follows, so the
training loop only has to call ``update()`` after each optimizer step.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightAverage:
    """ema = decay * ema + (1 - decay) * weights, after every optimizer step; the first update
    copies the weights. With D = 1 / (1 - decay), it averages over roughly the last D steps."""

    def __init__(self, model: nn.Module, decay: float):
        self.source = model
        self.averaged = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True
        )

    @property
    def module(self) -> nn.Module:
        """The averaged model, the same architecture as the source (evaluate or save it)."""
        return self.averaged.module

    def update(self) -> None:
        self.averaged.update_parameters(self.source)

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)
