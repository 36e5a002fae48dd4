"""Datasets and batching.

Every dataset, whatever its source, is handed to the engine as a ``Dataset``: uint8 image tensors
for the train/val/test splits, class names, and the normalisation. Small images live in memory
(on the training device when there is a GPU) and are augmented a whole batch at a time, which is
much faster than decoding and transforming one PIL image per sample in worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from sklearn.model_selection import train_test_split

from src.errors import ConfigError


@dataclass
class Split:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    class_names: list[str]
    mean: list[float]  # per channel, of pixel values scaled to [0, 1]
    std: list[float]

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a seeded train/val/test split that keeps the class balance in every part."""
    for key, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < fraction < 1.0:
            raise ConfigError(
                f"dataset.{key}={fraction} must be between 0 and 1 (exclusive), e.g. 0.15."
            )
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"dataset.val_fraction + dataset.test_fraction = {val_fraction + test_fraction} "
            "leaves nothing to train on; make their sum well below 1."
        )
    indices = np.arange(len(labels))
    train_val, test = train_test_split(
        indices, test_size=test_fraction, stratify=labels, random_state=seed
    )
    train, val = train_test_split(
        train_val,
        test_size=val_fraction / (1.0 - test_fraction),
        stratify=labels[train_val],
        random_state=seed,
    )
    return train, val, test


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, on the [0, 1] scale."""
    x = images.float().div_(255).transpose(0, 1).flatten(1)  # (C, N*H*W)
    return x.mean(dim=1).tolist(), x.std(dim=1).clamp_min(1e-6).tolist()


def load_digits_dataset(cfg: DictConfig) -> Dataset:
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels): real data, shipped offline."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; stretch them to 0..255 so every dataset is uint8 alike.
    images = torch.from_numpy(np.round(digits.images * (255 / 16)).astype(np.uint8))
    images = images.unsqueeze(1)  # (N, 1, 8, 8)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train, val, test = stratified_split(
        digits.target, cfg.val_fraction, cfg.test_fraction, cfg.split_seed
    )
    mean, std = channel_stats(images[train])
    return Dataset(
        name=cfg.name,
        train=Split(images[train], labels[train]),
        val=Split(images[val], labels[val]),
        test=Split(images[test], labels[test]),
        class_names=[str(d) for d in digits.target_names],
        mean=mean,
        std=std,
    )


# Each `dataset.source` names the function that reads it.
SOURCES: dict[str, Callable[[DictConfig], Dataset]] = {
    "digits": load_digits_dataset,
}


def load_dataset(cfg: DictConfig) -> Dataset:
    if cfg.source not in SOURCES:
        raise ConfigError(
            f"dataset.source={cfg.source!r} is not known; choose one of {sorted(SOURCES)}."
        )
    return SOURCES[cfg.source](cfg)


def resize(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [0, 1] at the model's (image_size, image_size)."""
    x = images.float().div_(255)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    return x


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


class BatchLoader:
    """Yields (images, labels) batches from a Split held in memory, ready for the model."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        image_size: int,
        mean: list[float],
        std: list[float],
        device: torch.device,
        shuffle: bool = False,
        augment: BatchAugment | None = None,
        seed: int = 0,
    ):
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.image_size = image_size
        self.mean, self.std = mean, std
        self.shuffle = shuffle
        self.augment = augment
        # Data order and augmentation draw from their own generator, which resume can restore.
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = resize(self.images[idx], self.image_size)
            if self.augment is not None:
                x = self.augment(x, self.generator)
            yield normalize(x, self.mean, self.std), self.labels[idx]
