"""The embedded default: scikit-learn's 1,797 handwritten digits, real data with no download."""

from __future__ import annotations

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
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; stretch them to 0..255 so every dataset is uint8 alike.
    images = torch.from_numpy(np.round(digits.images * (255 / 16)).astype(np.uint8))
    labels = torch.from_numpy(digits.target.astype(np.int64))
    class_names = [str(d) for d in digits.target_names]
    everything = fit_split(
        Split(images.unsqueeze(1), labels), cfg.image_size, cfg.channels
    )  # (N, 1, 8, 8)
    train, val, test = assemble_splits(everything, None, None, cfg, class_names)
    mean, std = channel_stats(train.images)
    return Dataset(cfg.name, train, val, test, class_names, mean, std)
