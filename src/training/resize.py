"""Progressive resizing (``trainer.start_image_size``): the first epochs train on smaller images,
growing step by step to ``model.image_size`` by ``trainer.full_size_at`` of the run, and the
rest train at full size, as FFCV's fast ResNet recipes do. Fewer pixels make fewer patches, and a
step's cost follows the tokens (docs: guide/performance.md#on-a-cpu-which-settings-pay).
Validation and the test always see ``model.image_size``; the model resizes its position
embeddings to each grid (src/model/vit.py). The size is a function of the epoch alone, so a
resumed run trains each epoch at the size the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from src.errors import ConfigError


def epoch_image_size(cfg: DictConfig, epoch: int) -> int:
    """The input size of ``epoch`` (from 1): ``trainer.start_image_size`` at epoch 1, growing in a
    straight line to ``model.image_size`` at ``trainer.full_size_at`` of the epochs, rounded down
    to a whole number of patches; ``model.image_size`` when the schedule is off."""
    full, start = cfg.model.image_size, cfg.trainer.start_image_size
    if start is None:
        return full
    ramp = max(1, round(cfg.trainer.full_size_at * cfg.trainer.epochs))  # the first full epoch
    if epoch >= ramp:
        return full
    size = start + (full - start) * (epoch - 1) / (ramp - 1)
    patch = cfg.model.patch_size
    return int(size // patch * patch)


class ResizedBatches:
    """The training batches with their images resized to ``size`` (bilinear, antialiased when
    shrinking, as torchvision's Resize); labels, Mixup targets and the batch count unchanged."""

    def __init__(self, batches: Sized, size: int):
        self.batches, self.size = batches, size

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, targets in self.batches:
            yield resize_images(images, self.size), targets


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    shrinking = size < images.shape[-1]
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking
    )


def check_resizing(cfg: DictConfig) -> None:
    """One sentence for a start size that is not a smaller whole number of patches (the range of
    trainer.full_size_at is src/training/ranges.py's)."""
    start, full, patch = cfg.trainer.start_image_size, cfg.model.image_size, cfg.model.patch_size
    if start is None:
        return
    if not isinstance(start, int) or isinstance(start, bool) or start % patch or start >= full:
        raise ConfigError(
            f"trainer.start_image_size={start} must be a whole number of patches "
            f"(model.patch_size={patch}) below model.image_size={full}, e.g. "
            f"{_example(full, patch)}; null turns progressive resizing off."
        )


def _example(full: int, patch: int) -> int:
    """Half the full size in whole patches (at least one patch)."""
    return max(patch, full // 2 // patch * patch)
