"""Tensor transforms shared by training, evaluation and inference.

Images travel as uint8 until a batch is formed; a batch is then resized to the model's input,
augmented (training only) and normalised, on whichever device it is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def resize(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [0, 1] at the model's (image_size, image_size)."""
    x = images.float().div_(255)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    return x


def resize_uint8(image: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 (C, H, W) -> uint8 (C, image_size, image_size), resized as ``resize`` does."""
    if image.shape[-2:] == (image_size, image_size):
        return image
    x = resize(image.unsqueeze(0), image_size)[0]
    return x.mul_(255).round_().to(torch.uint8)


def normalize(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def preprocess(
    images: torch.Tensor, image_size: int, mean: list[float], std: list[float]
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> normalised float (B, C, image_size, image_size).

    Evaluation and inference go through here, and training differs only by augmenting between
    the two steps, so all of them see identically prepared inputs.
    """
    return normalize(resize(images, image_size), mean, std)


@dataclass
class BatchAugment:
    """Augmentations of a whole batch at once, on whichever device it is on.

    They run at the model's input size, before normalisation, so ``crop_padding`` counts pixels
    of the model's input (as in the usual "pad 4, crop 32" for CIFAR).
    """

    crop_padding: int = 0  # random translation by up to this many pixels (zero padded)
    horizontal_flip: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The random draws come from a CPU generator, so results are the same on any device."""
        if self.crop_padding > 0:
            x = self._random_crop(x, generator)
        if self.horizontal_flip:
            flip = torch.rand(x.shape[0], generator=generator) < 0.5
            x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
        return x

    def _random_crop(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        B, C, H, W = x.shape
        p = self.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy, dx = torch.randint(0, 2 * p + 1, (2, B), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(H, device=x.device))[:, None, :, None]  # (B,1,H,1)
        cols = (dx[:, None] + torch.arange(W, device=x.device))[:, None, None, :]  # (B,1,1,W)
        batch = torch.arange(B, device=x.device)[:, None, None, None]
        chans = torch.arange(C, device=x.device)[None, :, None, None]
        return padded[batch, chans, rows, cols]  # (B, C, H, W)
