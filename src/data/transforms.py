"""Tensor transforms shared by training, evaluation and inference.

Images travel as uint8 until a batch is formed; a batch is then resized to the model's input,
augmented (training only) and normalised, on whichever device it is on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from src.data.randaugment import BatchRandAugment


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
    of the model's input (as in the usual "pad 4, crop 32" for CIFAR). Every image draws its own
    shift, flip, RandAugment operations and erased box.
    """

    crop_padding: int = 0  # random translation by up to this many pixels (zero padded)
    horizontal_flip: bool = False
    randaugment_ops: int = 0  # RandAugment operations per image; 0 turns it off
    randaugment_magnitude: int = 9  # their strength, out of 30
    random_erasing: float = 0.0  # chance that an image gets a box of random pixels

    def __post_init__(self):
        self.randaugment = (
            BatchRandAugment(self.randaugment_ops, self.randaugment_magnitude)
            if self.randaugment_ops > 0 else None
        )

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The random draws come from a CPU generator, so results are the same on any device."""
        if self.crop_padding > 0:
            x = self._random_crop(x, generator)
        if self.horizontal_flip:
            flip = torch.rand(x.shape[0], generator=generator) < 0.5
            x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
        if self.randaugment is not None:
            x = self.randaugment(x, generator)
        if self.random_erasing > 0:
            x = self._random_erase(x, generator)
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

    def _random_erase(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random erasing (Zhong et al., 2020) as timm and DeiT use it: with probability
        ``random_erasing`` a box of 2% to 1/3 of the image, aspect ratio 0.3 to 3.3, is filled
        with random pixels."""
        B, C, H, W = x.shape
        erase = torch.rand(B, generator=generator) < self.random_erasing
        area = H * W * torch.empty(B).uniform_(0.02, 1 / 3, generator=generator)
        aspect = torch.empty(B).uniform_(math.log(0.3), math.log(1 / 0.3), generator=generator).exp()
        h = (area * aspect).sqrt().round().clamp(1, H)
        w = (area / aspect).sqrt().round().clamp(1, W)
        top = (torch.rand(B, generator=generator) * (H - h + 1)).floor()
        left = (torch.rand(B, generator=generator) * (W - w + 1)).floor()
        box = torch.stack([top, top + h, left, left + w], dim=1).to(x.device)  # (B, 4)
        rows = torch.arange(H, device=x.device).view(1, H, 1)
        cols = torch.arange(W, device=x.device).view(1, 1, W)
        inside = (
            (rows >= box[:, 0, None, None]) & (rows < box[:, 1, None, None])
            & (cols >= box[:, 2, None, None]) & (cols < box[:, 3, None, None])
        )  # (B, H, W)
        mask = (inside & erase.to(x.device).view(B, 1, 1)).unsqueeze(1)  # (B, 1, H, W)
        # The noise is drawn where the batch is (a full batch of it is large), from a generator
        # seeded by the CPU one, so it is still fixed by the run's seed.
        seed = int(torch.randint(2**62, (1,), generator=generator))
        on_device = torch.Generator(device=x.device).manual_seed(seed)
        noise = torch.rand(x.shape, generator=on_device, device=x.device, dtype=x.dtype)
        return torch.where(mask, noise, x)
