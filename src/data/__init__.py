"""Datasets and batching.

Every dataset, whatever its source (embedded digits, torchvision, a local folder, Kaggle), is
handed to the engine as a ``Dataset``: train/val/test splits, class names and normalisation.
Small images are decoded once into uint8 tensors (cached on disk) and batched from memory, on the
GPU when training there, with augmentation applied to whole batches; folders too large for memory
are decoded by DataLoader workers as training goes.

torchvision is imported where it is used, not when this package is (its import loads
torch._dynamo): a setting that is refused, or ``--help``, answers before that. scikit-learn is
not imported by a run at all: its import cost every run about 1.3 s, so the split (stratified.py)
and the digits (digits.py) do without it, with the same results (tests/test_layout.py keeps both).
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig

from src.data.core import (
    AnySplit,
    Dataset,
    FileSplit,
    Split,
    assemble_splits,
    channel_stats,
    holdout,
    stratified_split,
    worker_count,
)
from src.data.digits import load_digits_dataset
from src.data.folder import load_folder_dataset
from src.data.kaggle import load_kaggle_dataset
from src.data.loaders import BatchLoader, StreamLoader, make_batches
from src.data.mixing import MixBatch
from src.data.transforms import BatchAugment, normalize, preprocess, resize, resize_uint8
from src.errors import ConfigError


def load_torchvision_dataset(cfg: DictConfig, listing_only: bool = False) -> Dataset:
    """src/data/torchvision_source.py's, imported on first use: importing torchvision loads
    torch._dynamo (about 2 s), so a setting refused, or ``--help``, answers before it."""
    from src.data.torchvision_source import load_torchvision_dataset as load

    return load(cfg, listing_only)


# Each `dataset.source` names the function that reads it: fn(cfg, listing_only=False).
SOURCES: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits_dataset,
    "torchvision": load_torchvision_dataset,
    "folder": load_folder_dataset,
    "kaggle": load_kaggle_dataset,
}


def load_dataset(cfg: DictConfig) -> Dataset:
    return _source(cfg)(cfg)


def list_dataset(cfg: DictConfig) -> Dataset:
    """As ``load_dataset``, but image files are listed rather than read, and their mean/std is not
    measured (empty lists): to look at a few images without decoding them all."""
    return _source(cfg)(cfg, listing_only=True)


def _source(cfg: DictConfig) -> Callable[..., Dataset]:
    if cfg.source not in SOURCES:
        raise ConfigError(
            f"dataset.source={cfg.source!r} is not known; choose one of {sorted(SOURCES)}."
        )
    return SOURCES[cfg.source]


__all__ = [
    "AnySplit",
    "BatchAugment",
    "BatchLoader",
    "Dataset",
    "FileSplit",
    "MixBatch",
    "SOURCES",
    "Split",
    "StreamLoader",
    "assemble_splits",
    "channel_stats",
    "holdout",
    "list_dataset",
    "load_dataset",
    "make_batches",
    "normalize",
    "preprocess",
    "resize",
    "resize_uint8",
    "stratified_split",
    "worker_count",
]
