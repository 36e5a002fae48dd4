"""What every dataset hands the engine: splits, class names and normalisation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from src.data.stratified import stratified_holdout
from src.errors import ConfigError


@dataclass
class Split:
    """Images decoded once and held in memory."""

    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def subset(self, indices: np.ndarray) -> Split:
        index = torch.as_tensor(indices, dtype=torch.long)
        return Split(self.images[index], self.labels[index])


@dataclass
class FileSplit:
    """Image files decoded as they are batched: for folders too large to hold in memory."""

    files: list[Path]
    labels: torch.Tensor  # int64, (N,)
    channels: int
    image_size: int  # every image is resized to (image_size, image_size) as it is read

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> FileSplit:
        index = torch.as_tensor(indices, dtype=torch.long)
        files = [self.files[i] for i in index.tolist()]
        return FileSplit(files, self.labels[index], self.channels, self.image_size)


AnySplit = Split | FileSplit


@dataclass
class Dataset:
    name: str
    train: AnySplit
    val: AnySplit
    test: AnySplit
    class_names: list[str]
    mean: list[float]  # per channel, of pixel values scaled to [0, 1]
    std: list[float]

    @property
    def channels(self) -> int:
        return self.train.channels

    @property
    def image_size(self) -> int:
        return self.train.image_size


def check_fraction(value: float, setting: str) -> None:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{setting}={value} must be between 0 and 1 (exclusive), e.g. 0.1.")


def holdout(
    labels: np.ndarray,
    fraction: float,
    seed: int,
    setting: str,
    class_names: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a seeded, stratified (keep, held_out) split of ``labels``."""
    counts = np.bincount(labels)
    present = counts[counts > 0]
    if present.min() < 2:
        rare = int(np.flatnonzero(counts == present.min())[0])
        name = class_names[rare] if class_names else rare
        raise ConfigError(
            f"class {name!r} has a single image, too few to hold part of it out for {setting}; "
            "add images of that class or remove it."
        )
    try:
        return stratified_holdout(labels, fraction, seed)
    except ValueError as err:  # e.g. fewer held-out images than classes
        raise ConfigError(
            f"{setting}={fraction} cannot be split off {len(labels)} images of {len(present)} "
            f"classes ({err}); change the fraction or add images."
        ) from None


def stratified_split(
    labels: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    class_names: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a seeded train/val/test split that keeps the class balance in every part."""
    check_fraction(val_fraction, "dataset.val_fraction")
    check_fraction(test_fraction, "dataset.test_fraction")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"dataset.val_fraction + dataset.test_fraction = {val_fraction + test_fraction} "
            "leaves nothing to train on; make their sum well below 1."
        )
    train_val, test = holdout(labels, test_fraction, seed, "dataset.test_fraction", class_names)
    # The validation share is of the whole, so it is scaled to what the test split left.
    train, val = holdout(
        labels[train_val],
        val_fraction / (1.0 - test_fraction),
        seed,
        "dataset.val_fraction",
        class_names,
    )
    return train_val[train], train_val[val], test


def assemble_splits(
    train: AnySplit,
    val: AnySplit | None,
    test: AnySplit | None,
    cfg,
    class_names: list[str],
) -> tuple[AnySplit, AnySplit, AnySplit]:
    """Train/val/test from the official splits there are; the missing ones are held out of train.

    ``cfg`` is the dataset config: val_fraction, test_fraction and split_seed.
    """
    labels = train.labels.numpy()
    if val is None and test is None:
        parts = stratified_split(
            labels, cfg.val_fraction, cfg.test_fraction, cfg.split_seed, class_names
        )
        return tuple(train.subset(part) for part in parts)
    if val is None or test is None:
        missing = "val" if val is None else "test"
        setting = f"dataset.{missing}_fraction"
        check_fraction(cfg[f"{missing}_fraction"], setting)
        keep, held = holdout(
            labels, cfg[f"{missing}_fraction"], cfg.split_seed, setting, class_names
        )
        val = train.subset(held) if val is None else val
        test = train.subset(held) if test is None else test
        train = train.subset(keep)
    return train, val, test


STATS_CHUNK_BYTES = 32 * 2**20  # uint8 images counted at a time by channel_stats


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and (unbiased) std of uint8 images, on the [0, 1] scale.

    A uint8 pixel takes one of 256 values, so counting them per channel, a chunk of images at a
    time, gives the exact mean and std in float64 without a float copy of the images (which
    would be 4 to 8 times their size)."""
    counts = pixel_counts(images)  # (C, 256)
    values = torch.arange(256, dtype=torch.float64) / 255
    n = counts.sum(dim=1)
    mean = (counts * values).sum(dim=1) / n
    var = (counts * (values - mean[:, None]) ** 2).sum(dim=1) / (n - 1).clamp_min(1)
    return mean.tolist(), var.sqrt().clamp_min(1e-6).tolist()


def pixel_counts(images: torch.Tensor) -> torch.Tensor:
    """(C, 256) float64: how many pixels of each channel hold each value."""
    n, c = images.shape[:2]
    counts = torch.zeros(c, 256, dtype=torch.float64)
    per_chunk = max(1, STATS_CHUNK_BYTES // max(1, images[:1].numel()))
    for start in range(0, n, per_chunk):
        chunk = images[start : start + per_chunk]
        for channel in range(c):
            values = chunk[:, channel].reshape(-1)  # uint8: bincount takes it as it is
            counts[channel] += torch.bincount(values, minlength=256).double()
    return counts


def loader_mode(setting: str, memory_mb: float, max_memory_mb: float) -> str:
    """``dataset.loader``: memory or stream, or auto: memory when the decoded images fit."""
    if setting == "auto":
        return "memory" if memory_mb <= max_memory_mb else "stream"
    return setting


def worker_count(setting: int | str) -> int:
    """``trainer.num_workers``: a number, or 'auto' for one per CPU core (at most 8)."""
    if setting == "auto":
        return min(8, os.cpu_count() or 1)
    if not isinstance(setting, int) or setting < 0:
        raise ConfigError(f"trainer.num_workers={setting} must be 'auto' or a whole number >= 0.")
    return setting
