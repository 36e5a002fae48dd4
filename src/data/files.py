"""Decoding image files into uint8 tensors at the model's size, in DataLoader worker processes."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from src.data.core import FileSplit
from src.data.transforms import resize_uint8
from src.errors import ConfigError
from src.images import decode_image, is_grey_file


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
    images = torch.stack([item.image for item in good]) if good else torch.empty(0, dtype=torch.uint8)
    return DecodedBatch(
        images, torch.tensor([item.label for item in good], dtype=torch.long),
        [item.grey for item in good], [item.error for item in items if item.error is not None],
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
    """Every file of ``files`` decoded once, in parallel worker processes, in order."""
    loader = DataLoader(files, batch_size=256, num_workers=num_workers, collate_fn=collate_decoded)
    batches: list[DecodedBatch] = []
    with tqdm(total=len(files), desc=desc, unit="img", leave=False, disable=None) as progress:
        for batch in loader:
            batches.append(batch)
            progress.update(len(batch.labels) + len(batch.errors))
    non_empty = [b.images for b in batches if len(b.labels)]
    return DecodedBatch(
        torch.cat(non_empty) if non_empty else torch.empty(0, dtype=torch.uint8),
        torch.cat([b.labels for b in batches]) if batches else torch.empty(0, dtype=torch.long),
        [grey for b in batches for grey in b.grey],
        [error for b in batches for error in b.errors],
    )


def scan_greyness(files: list[Path], desc: str) -> list[bool | ConfigError]:
    """For each file, whether it is greyscale, read from its header (fast), or why it cannot be read."""
    found: list[bool | ConfigError] = []
    for path in tqdm(files, desc=desc, unit="img", leave=False, disable=None):
        try:
            found.append(is_grey_file(path))
        except ConfigError as err:
            found.append(err)
    return found
