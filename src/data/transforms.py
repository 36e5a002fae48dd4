"""Tensor transforms shared by training, evaluation and inference.

Images travel as uint8 until a batch is formed; a batch is then resized to the model's input,
augmented (training only) and normalised, on whichever device it is on.

Nothing here makes the CPU wait for a GPU: a batch's random numbers are drawn together on the CPU
(from the loader's seeded generator) and cross to the device in one non-blocking copy, and
everything after that is tensor work on the device.
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


def resize_uint8(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 (C, H, W) or (B, C, H, W) -> the same at (image_size, image_size), resized as
    ``resize`` does."""
    if images.shape[-2:] == (image_size, image_size):
        return images
    batch = images if images.dim() == 4 else images.unsqueeze(0)
    x = resize(batch, image_size).mul_(255).round_().to(torch.uint8)
    return x if images.dim() == 4 else x[0]


def channel_tensor(values: list[float] | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A per-channel constant (mean or std) shaped (1, C, 1, 1) to broadcast over a batch."""
    return torch.as_tensor(values, dtype=torch.float32).view(1, -1, 1, 1).to(device)


def normalize(
    x: torch.Tensor, mean: list[float] | torch.Tensor, std: list[float] | torch.Tensor
) -> torch.Tensor:
    """Loaders pass tensors made once by ``channel_tensor``; lists are made into tensors here."""
    if not isinstance(mean, torch.Tensor):
        mean, std = channel_tensor(mean, x.device), channel_tensor(std, x.device)
    return (x - mean) / std


def preprocess(
    images: torch.Tensor, image_size: int, mean: list[float], std: list[float]
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> normalised float (B, C, image_size, image_size).

    Evaluation and inference go through here, and training differs only by augmenting between
    the two steps, so all of them see identically prepared inputs.
    """
    return normalize(resize(images, image_size), mean, std)


def move_without_waiting(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on ``device``, copied from pinned memory without making the CPU wait."""
    tensor = tensor.pin_memory() if device.type == "cuda" else tensor
    return tensor.to(device, non_blocking=True)


def to_device(host: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """CPU int64 tensors -> the same on ``device``, in one non-blocking copy from pinned memory
    (a copy per tensor, or from pageable memory, would each make the CPU wait for the GPU)."""
    if not host:
        return host
    moved = move_without_waiting(torch.cat([t.reshape(-1) for t in host.values()]), device)
    pieces = moved.split([t.numel() for t in host.values()])
    return {name: piece.view(t.shape) for (name, t), piece in zip(host.items(), pieces)}


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
            if self.randaugment_ops > 0
            else None
        )

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The random draws come from a CPU generator, so results are the same on any device
        (but for the erased boxes' noise, drawn on the device from the run's seed)."""
        B, _, H, W = x.shape
        host: dict[str, torch.Tensor] = {}
        if self.crop_padding > 0:
            host["shift"] = torch.randint(0, 2 * self.crop_padding + 1, (2, B), generator=generator)
        if self.horizontal_flip:
            host["flip"] = (torch.rand(B, generator=generator) < 0.5).long()
        if self.randaugment is not None:
            host["order"], group_sizes = self.randaugment.draw(B, generator)
        if self.random_erasing > 0:
            host["box"] = self._draw_boxes(B, H, W, generator)
            noise_seed = int(torch.randint(2**62, (1,), generator=generator))
        draws = to_device(host, x.device)

        if "shift" in draws:
            x = self._random_crop(x, draws["shift"])
        if "flip" in draws:
            x = torch.where(draws["flip"].bool().view(-1, 1, 1, 1), x.flip(3), x)
        if "order" in draws:
            x = self.randaugment.apply(x, draws["order"], group_sizes)
        if "box" in draws:
            x = self._random_erase(x, draws["box"], noise_seed)
        return x

    def _random_crop(self, x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """Each image moved by its own (dy, dx) within the zero-padded frame."""
        B, C, H, W = x.shape
        p = self.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy, dx = shift
        rows = (dy[:, None] + torch.arange(H, device=x.device))[:, None, :, None]  # (B,1,H,1)
        cols = (dx[:, None] + torch.arange(W, device=x.device))[:, None, None, :]  # (B,1,1,W)
        batch = torch.arange(B, device=x.device)[:, None, None, None]
        chans = torch.arange(C, device=x.device)[None, :, None, None]
        return padded[batch, chans, rows, cols]  # (B, C, H, W)

    def _draw_boxes(self, B: int, H: int, W: int, generator: torch.Generator) -> torch.Tensor:
        """Random erasing (Zhong et al., 2020) as timm and DeiT use it: with probability
        ``random_erasing`` a box of 2% to 1/3 of the image, aspect ratio 0.3 to 3.3. Returns
        (5, B): erase?, top, bottom, left, right."""
        erase = torch.rand(B, generator=generator) < self.random_erasing
        area = H * W * torch.empty(B).uniform_(0.02, 1 / 3, generator=generator)
        aspect = (
            torch.empty(B).uniform_(math.log(0.3), math.log(1 / 0.3), generator=generator).exp()
        )
        h = (area * aspect).sqrt().round().clamp(1, H)
        w = (area / aspect).sqrt().round().clamp(1, W)
        top = (torch.rand(B, generator=generator) * (H - h + 1)).floor()
        left = (torch.rand(B, generator=generator) * (W - w + 1)).floor()
        return torch.stack([erase.float(), top, top + h, left, left + w]).long()

    def _random_erase(self, x: torch.Tensor, box: torch.Tensor, noise_seed: int) -> torch.Tensor:
        B, C, H, W = x.shape
        erase, top, bottom, left, right = (b.view(B, 1, 1) for b in box)
        rows = torch.arange(H, device=x.device).view(1, H, 1)
        cols = torch.arange(W, device=x.device).view(1, 1, W)
        inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)  # (B, H, W)
        mask = (inside & erase.bool()).unsqueeze(1)  # (B, 1, H, W)
        # The noise is drawn where the batch is (a full batch of it is large), from a generator
        # seeded by the CPU one, so it is still fixed by the run's seed.
        on_device = torch.Generator(device=x.device).manual_seed(noise_seed)
        noise = torch.rand(x.shape, generator=on_device, device=x.device, dtype=x.dtype)
        return torch.where(mask, noise, x)
