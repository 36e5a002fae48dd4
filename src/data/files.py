"""Decoding image files into uint8 tensors at the model's size, in DataLoader worker processes."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from src.data.core import FileSplit, channel_stats
from src.data.images import decode_image, is_grey_file
from src.data.transforms import resize_uint8
from src.errors import ConfigError

STATS_SAMPLE = 1000  # images decoded to estimate mean/std when the data is streamed


class Decoded(NamedTuple):
    image: torch.Tensor | None  # uint8 (C, S, S), None when the file could not be read
    label: int
    grey: bool  # the file itself is greyscale
    error: str | None


class ImageFiles(TorchDataset):
    """Image files and their labels; each item is read, converted and resized when asked for."""

    def __init__(self, files: list[Path], labels: torch.Tensor, channels: int, image_size: int):
        self.files = files
        self.labels = labels.tolist()
        self.channels = channels
        self.image_size = image_size

    @classmethod
    def of(cls, split: FileSplit) -> ImageFiles:
        return cls(split.files, split.labels, split.channels, split.image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Decoded:
        label = self.labels[index]
        try:
            image, grey = decode_image(self.files[index], self.channels)
        except ConfigError as err:
            return Decoded(None, label, False, str(err))
        return Decoded(resize_uint8(image, self.image_size), label, grey, None)


class DecodedBatch(NamedTuple):
    images: torch.Tensor  # uint8 (B, C, S, S) of the readable files
    labels: torch.Tensor  # int64 (B,)
    grey: list[bool]
    errors: list[str]  # one per unreadable file


def collate_decoded(items: list[Decoded]) -> DecodedBatch:
    """Stacks in the worker, so one shared tensor per batch crosses to the main process (not one
    per image), labels included (a tensor made there is pinned with the images)."""
    good = [item for item in items if item.error is None]
    images = (
        torch.stack([item.image for item in good]) if good else torch.empty(0, dtype=torch.uint8)
    )
    return DecodedBatch(
        images,
        torch.tensor([item.label for item in good], dtype=torch.long),
        [item.grey for item in good],
        [item.error for item in items if item.error is not None],
    )


def collate_full(items: list[Decoded]) -> DecodedBatch:
    """As ``collate_decoded``, but an unreadable file's place goes to a readable image of the same
    batch (with its label), so the batch keeps its size."""
    good = [item for item in items if item.error is None]
    errors = [item.error for item in items if item.error is not None]
    if not good:
        return collate_decoded(items)
    filled = [item if item.error is None else good[i % len(good)] for i, item in enumerate(items)]
    return collate_decoded(filled)._replace(errors=errors)


def decode_all(files: ImageFiles, num_workers: int, desc: str) -> DecodedBatch:
    """Every file of ``files`` decoded once, in parallel worker processes, in order.

    The images are written into one tensor as the batches arrive, so the decoded split is held
    once (gathering the batches and joining them at the end would hold it twice)."""
    loader = DataLoader(files, batch_size=256, num_workers=num_workers, collate_fn=collate_decoded)
    images: torch.Tensor | None = None
    filled = 0
    labels: list[torch.Tensor] = []
    grey: list[bool] = []
    errors: list[str] = []
    with tqdm(total=len(files), desc=desc, unit="img", leave=False, disable=None) as progress:
        for batch in loader:
            if len(batch.labels):
                if images is None:
                    images = torch.empty((len(files), *batch.images.shape[1:]), dtype=torch.uint8)
                images[filled : filled + len(batch.labels)] = batch.images
                filled += len(batch.labels)
            labels.append(batch.labels)
            grey += batch.grey
            errors += batch.errors
            progress.update(len(batch.labels) + len(batch.errors))
    return DecodedBatch(
        images[:filled] if images is not None else torch.empty(0, dtype=torch.uint8),
        torch.cat(labels) if labels else torch.empty(0, dtype=torch.long),
        grey,
        errors,
    )


def sample_stats(split: FileSplit, seed: int, num_workers: int) -> tuple[list[float], list[float]]:
    """Mean and std from a seeded sample of a streamed split's images (decoding all of them
    would be slow)."""
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(split), size=min(STATS_SAMPLE, len(split)), replace=False)
    decoded = decode_all(
        ImageFiles.of(split.subset(np.sort(sample))), num_workers, "measuring mean/std"
    )
    return channel_stats(decoded.images)


def scan_greyness(files: list[Path], desc: str) -> list[bool | ConfigError]:
    """Per file, whether it is greyscale, read from its header (fast), or why it cannot be read."""
    found: list[bool | ConfigError] = []
    for path in tqdm(files, desc=desc, unit="img", leave=False, disable=None):
        try:
            found.append(is_grey_file(path))
        except ConfigError as err:
            found.append(err)
    return found
