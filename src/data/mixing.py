"""Mixup and CutMix for training batches, with the soft targets they call for.

torchvision's ``MixUp`` and ``CutMix`` do the mixing (each image with its neighbour in the
shuffled batch, one mixing ratio per batch, as timm and DeiT do). This decides, per batch, whether
to mix and which of the two to use, and always hands back (B, classes) probability targets, which
``F.cross_entropy`` takes as they are (label smoothing included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class MixBatch:
    """With probability ``prob``, Mixup or CutMix (half the batches each when both are on)."""

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
    ):
        self.num_classes = num_classes
        self.prob = prob
        alphas = {"MixUp": mixup_alpha, "CutMix": cutmix_alpha}
        wanted = {name: alpha for name, alpha in alphas.items() if alpha > 0}
        if wanted:
            from torchvision.transforms import v2  # (lazy: see src/data/__init__.py)
        self.mixers = [
            getattr(v2, name)(alpha=alpha, num_classes=num_classes)
            for name, alpha in wanted.items()
        ]

    @property
    def active(self) -> bool:
        return bool(self.mixers) and self.prob > 0

    def __call__(
        self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W); labels: (B,) class indices -> mixed x and (B, classes) targets.

        Whether and how to mix comes from ``generator``; the mixing ratio and CutMix's box come
        from torch's global generator (torchvision draws them there), which the seed also fixes."""
        if not self.active or float(torch.rand(1, generator=generator)) >= self.prob:
            return x, F.one_hot(labels, self.num_classes).to(x.dtype)
        pick = int(torch.randint(len(self.mixers), (1,), generator=generator))
        return self.mixers[pick](x, labels)
