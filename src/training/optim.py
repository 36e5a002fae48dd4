"""Optimizer parameter groups and learning-rate schedules (torch's own schedulers, chained).

The optimizer and scheduler configs are Hydra partials (``_partial_: true``): the config holds the
hyperparameters, and the code below adds what only the run knows (parameters, steps per epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
    StepLR,
)

from src.errors import ConfigError

# Names of parameters that are never weight-decayed, besides all 1-D ones (biases, norms).
NO_DECAY_NAMES = ("pos_embed", "cls_token")
# The most of a run that warmup takes: a longer scheduler.warmup_epochs (5 in a 3-epoch run) would
# reach optimizer.lr only at the last step; it is shortened to this, and said (checks.warmup_note).
MAX_WARMUP_SHARE = 0.5


def param_groups(
    model: nn.Module, weight_decay: float, lr_scale: Callable[[str], float] | None = None
) -> list[dict]:
    """Weights with decay; norms, biases, position embedding and class token without. With
    ``lr_scale`` (parameter name -> multiplier of the base lr), one pair of groups per
    multiplier."""
    groups: dict[tuple[bool, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue  # e.g. fixed sin-cos position embeddings, or a frozen backbone
        no_decay = param.ndim <= 1 or any(key in name for key in NO_DECAY_NAMES)
        scale = lr_scale(name) if lr_scale else 1.0
        groups.setdefault((no_decay, scale), []).append(param)
    return [
        {"params": params, "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": scale}
        for (no_decay, scale), params in sorted(groups.items(), key=lambda g: (g[0][0], -g[0][1]))
    ]


def finetune_lr_scale(
    depth: int, backbone_lr_scale: float = 1.0, layer_decay: float = 1.0
) -> Callable[[str], float]:
    """Parameter name -> lr multiplier: the head learns at the base lr; block i of ``depth`` at
    backbone_lr_scale x layer_decay^(depth + 1 - i), the embeddings (layer 0) slowest."""

    def scale(name: str) -> float:
        if name.startswith("head."):
            return 1.0
        if name.startswith("blocks."):
            layer = int(name.split(".")[1]) + 1
        elif name.startswith(("patch_embed", "cls_token", "pos_embed")):
            layer = 0
        else:  # the final norm, just below the head
            layer = depth + 1
        return backbone_lr_scale * layer_decay ** (depth + 1 - layer)

    return scale


def check_learning_rate(lr) -> None:
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not 0.0 < lr < 1.0:
        raise ConfigError(f"optimizer.lr={lr} is out of range; use a value in (0, 1), e.g. 1e-3.")


def build_optimizer(
    factory: Callable[..., Optimizer],
    model: nn.Module,
    device: torch.device,
    lr_scale: Callable[[str], float] | None = None,
) -> Optimizer:
    """``factory`` is the instantiated optimizer partial, e.g. AdamW(lr=..., weight_decay=...);
    ``lr_scale`` gives parameters their own multiple of its lr (fine-tuning)."""
    weight_decay = factory.keywords.get("weight_decay", 0.0)
    lr = factory.keywords.get("lr")
    check_learning_rate(lr)
    extra = {}
    # Adam/AdamW's fused kernels are their fastest implementation, on a GPU and on a CPU (where
    # a step of the 5M-parameter vit_tiny took 59 ms instead of 240 ms).
    # (`+optimizer.fused=false` keeps the foreach one.)
    adam = factory.func in (torch.optim.Adam, torch.optim.AdamW)
    if adam and device.type in ("cuda", "cpu") and "fused" not in factory.keywords:
        extra["fused"] = True
    groups = param_groups(model, weight_decay, lr_scale)
    if not groups:
        raise ConfigError(
            "no parameter is left to train; finetune.freeze_backbone freezes all but the head."
        )
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    return factory(groups, **extra)


def warmup_epochs_used(warmup_epochs: float, epochs: int) -> float:
    """``warmup_epochs``, but no more than MAX_WARMUP_SHARE of the run's ``epochs``."""
    return min(warmup_epochs, epochs * MAX_WARMUP_SHARE)


def _warmup_steps(warmup_epochs: float, steps_per_epoch: int, epochs: int) -> int:
    return int(warmup_epochs_used(warmup_epochs, epochs) * steps_per_epoch)


def _with_warmup(optimizer: Optimizer, main: LRScheduler, warmup_steps: int) -> LRScheduler:
    """Linear warmup over ``warmup_steps`` optimizer steps, then ``main``."""
    if warmup_steps <= 0:
        return main
    warmup = LinearLR(optimizer, start_factor=1.0 / warmup_steps, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


class CosineToFloor(CosineAnnealingLR):
    """Cosine decay of each parameter group's lr from its start to ``eta_min`` x the group's
    ``lr_scale``: every group keeps its share of the base lr down to the floor, so a layer that
    starts below ``min_lr`` (layer decay) decays too instead of rising to it. Closed form, with
    the same state as torch's CosineAnnealingLR (checkpoints load either way)."""

    def get_lr(self) -> list[float]:
        return self._get_closed_form_lr()

    def _share_left(self) -> float:
        """How much of the way from the floor to the start remains: 1 at step 0, 0 at T_max."""
        return (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2

    def _get_closed_form_lr(self) -> list[float]:
        left = self._share_left()
        floors = [
            self.eta_min * group.get("lr_scale", 1.0) for group in self.optimizer.param_groups
        ]
        return [floor + (base_lr - floor) * left for base_lr, floor in zip(self.base_lrs, floors)]


class LinearToFloor(CosineToFloor):
    """A straight line instead of the cosine, to the same floors, with the same state."""

    def _share_left(self) -> float:
        return 1 - min(self.last_epoch, self.T_max) / self.T_max


def warmup_cosine(
    optimizer: Optimizer,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float = 0.0,
    min_lr: float = 0.0,
) -> LRScheduler:
    """Per-step linear warmup (over at most half the run), then a cosine decay to ``min_lr`` at
    the last step (to min_lr x the group's lr scale for fine-tuning's parameter groups: see
    ``CosineToFloor``)."""
    return _warmup_then(CosineToFloor, optimizer, steps_per_epoch, epochs, warmup_epochs, min_lr)


def warmup_linear(
    optimizer: Optimizer,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float = 0.0,
    min_lr: float = 0.0,
) -> LRScheduler:
    """Per-step linear warmup (over at most half the run), then a straight line down to
    ``min_lr`` at the last step, each fine-tuning group to its own share of it."""
    return _warmup_then(LinearToFloor, optimizer, steps_per_epoch, epochs, warmup_epochs, min_lr)


def _warmup_then(
    decay: type[CosineToFloor],
    optimizer: Optimizer,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float,
    min_lr: float,
) -> LRScheduler:
    """Warmup, then ``decay`` from the optimizer's lr to ``min_lr`` over the remaining steps."""
    total = steps_per_epoch * epochs
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch, epochs)
    return _with_warmup(
        optimizer, decay(optimizer, T_max=max(total - warmup, 1), eta_min=min_lr), warmup
    )


def step(
    optimizer: Optimizer,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float = 0.0,
    step_epochs: int = 30,
    gamma: float = 0.1,
) -> LRScheduler:
    """Multiply the learning rate by ``gamma`` every ``step_epochs`` epochs (after warmup, over
    at most half the run)."""
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch, epochs)
    decay = StepLR(optimizer, step_size=max(step_epochs * steps_per_epoch, 1), gamma=gamma)
    return _with_warmup(optimizer, decay, warmup)


def constant(
    optimizer: Optimizer, steps_per_epoch: int, epochs: int, warmup_epochs: float = 0.0
) -> LRScheduler:
    """The optimizer's learning rate throughout (after warmup, over at most half the run)."""
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch, epochs)
    return _with_warmup(optimizer, ConstantLR(optimizer, factor=1.0, total_iters=0), warmup)
