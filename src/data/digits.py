"""The embedded default: scikit-learn's 1,797 handwritten digits, real data with no download."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from src.data.core import Dataset, Split, assemble_splits, channel_stats
from src.data.sizes import check_size_and_channels, fit_split


def load_digits_dataset(cfg: DictConfig, listing_only: bool = False) -> Dataset:
    """8x8 images with 17 grey levels, split train/val/test (stratified, seeded), at
    dataset.image_size and dataset.channels (8 and 1: as they are). Held in memory, so
    ``listing_only`` (as the other sources take it) changes nothing."""
    check_size_and_channels(cfg.image_size, cfg.channels)
    pixels, targets = read_digits()
    # Pixel values are 0..16; stretch them to 0..255 so every dataset is uint8 alike.
    images = torch.from_numpy(np.round(pixels * (255 / 16)).astype(np.uint8))
    labels = torch.from_numpy(targets.astype(np.int64))
    class_names = [str(d) for d in range(10)]
    everything = fit_split(
        Split(images.unsqueeze(1), labels), cfg.image_size, cfg.channels
    )  # (N, 1, 8, 8)
    train, val, test = assemble_splits(everything, None, None, cfg, class_names)
    mean, std = channel_stats(train.images)
    return Dataset(cfg.name, train, val, test, class_names, mean, std)


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The (1797, 8, 8) images and their digits, as scikit-learn's ``load_digits`` gives them.
    Read from the file inside scikit-learn without importing it: the import costs a run about
    1.3 s (see src/data/stratified.py). Where the file has moved, ``load_digits`` reads it."""
    spec = importlib.util.find_spec("sklearn")  # finds the package; imports nothing
    table = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec else None
    if table is None or not table.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    data = np.loadtxt(table, delimiter=",")  # 64 pixel values, then the digit, per row
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
