"""Batches ready for the model, from images held in memory or decoded from files as they go.

Both loaders draw the data order and the augmentation from one CPU generator of their own, so a
run's data stream is fixed by its seed, and resume can restore it mid-run.

Shuffled (training) epochs drop their last partial batch, as timm and DeiT do, unless it is the
only batch: every training step then has the same batch shape, so a compiled model is not
recompiled for a smaller last batch. Evaluation keeps every image.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from src.data.core import AnySplit, FileSplit, Split
from src.data.files import ImageFiles, collate_decoded
from src.data.mixing import MixBatch
from src.data.transforms import BatchAugment, normalize, resize
from src.distributed import shard, shard_size

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


def epoch_order(
    n: int, generator: torch.Generator, shuffle: bool, repeats: int = 1, batch_size: int = 1
) -> torch.Tensor:
    """The epoch's order, and under torchrun this process's share of it. Shuffled (training)
    orders are padded so every process takes the same number of steps; every process draws the
    same permutation, because all of them seed their generator alike."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = shard(order, pad=shuffle)
    return repeat_in_batches(order, repeats, batch_size) if repeats > 1 else order


def repeat_in_batches(order: torch.Tensor, repeats: int, batch_size: int) -> torch.Tensor:
    """Repeated augmentation (Hoffer et al., 2020; DeiT): every batch holds batch_size / repeats
    images, each ``repeats`` times, to be augmented differently. The epoch keeps its length, so it
    sees 1/repeats of the images. The copies sit apart in the batch ([a b c a b c]), so Mixup and
    CutMix, which pair each image with its neighbour, do not mix an image with itself."""
    per_batch = max(1, batch_size // repeats)
    unique = order[: -(-len(order) // repeats)]
    return torch.cat([chunk.repeat(repeats) for chunk in unique.split(per_batch)])[: len(order)]


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """Batches of ``n`` images; ``drop_last`` leaves out a last partial batch, unless it is the
    only one."""
    return max(n // batch_size, 1) if drop_last and n else -(-n // batch_size)


class _BatchFinisher:
    """uint8 batch on the device -> resize -> augment (training) -> normalise -> mix (training).

    Without mixing the targets are the class indices; with it, (B, classes) probabilities."""

    def __init__(self, image_size, mean, std, device, augment: BatchAugment | None,
                 mix: MixBatch | None, seed: int):
        self.image_size = image_size
        self.mean, self.std = mean, std
        self.device = device
        self.augment = augment
        self.mix = mix if mix is not None and mix.active else None
        self.generator = torch.Generator().manual_seed(seed)

    def finish(self, images: torch.Tensor, labels: torch.Tensor) -> Batch:
        x = resize(images, self.image_size)
        if self.augment is not None:
            x = self.augment(x, self.generator)
        x = normalize(x, self.mean, self.std)
        if self.mix is not None:
            return self.mix(x, labels, self.generator)
        return x, labels


class BatchLoader(_BatchFinisher):
    """Batches of a Split held in memory (on the training device), indexed without copies to spare."""

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
        mix: MixBatch | None = None,
        repeats: int = 1,
        seed: int = 0,
    ):
        super().__init__(image_size, mean, std, device, augment, mix, seed)
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.repeats = repeats

    def __len__(self) -> int:
        n = shard_size(len(self.labels), pad=self.shuffle)
        return num_batches(n, self.batch_size, drop_last=self.shuffle)

    def __iter__(self) -> Iterator[Batch]:
        order = epoch_order(
            len(self.labels), self.generator, self.shuffle, self.repeats, self.batch_size
        ).to(self.images.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.finish(self.images[idx], self.labels[idx])


class _GeneratorOrder(Sampler[int]):
    """A DataLoader sampler whose order comes from the loader's own generator."""

    def __init__(self, n: int, generator: torch.Generator, shuffle: bool, repeats: int,
                 batch_size: int):
        self.n, self.generator, self.shuffle = n, generator, shuffle
        self.repeats, self.batch_size = repeats, batch_size

    def __len__(self) -> int:
        return shard_size(self.n, pad=self.shuffle)

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(self.n, self.generator, self.shuffle, self.repeats, self.batch_size)
        return iter(order.tolist())


class StreamLoader(_BatchFinisher):
    """Batches of a FileSplit, decoded by DataLoader workers (pinned memory, persistent workers)."""

    def __init__(
        self,
        split: FileSplit,
        batch_size: int,
        image_size: int,
        mean: list[float],
        std: list[float],
        device: torch.device,
        shuffle: bool = False,
        augment: BatchAugment | None = None,
        mix: MixBatch | None = None,
        repeats: int = 1,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__(image_size, mean, std, device, augment, mix, seed)
        self.loader = DataLoader(
            ImageFiles.of(split),
            batch_size=batch_size,
            sampler=_GeneratorOrder(len(split), self.generator, shuffle, repeats, batch_size),
            drop_last=shuffle and shard_size(len(split), pad=True) >= batch_size,
            num_workers=num_workers,
            collate_fn=collate_decoded,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            for error in batch.errors:  # files that went bad after the dataset was checked
                log.warning("skipped an unreadable image: %s", error)
            if not batch.labels:
                continue
            images = batch.images.to(self.device, non_blocking=True)
            yield self.finish(images, torch.tensor(batch.labels, device=self.device))


def make_batches(
    split: AnySplit, batch_size: int, num_workers: int = 0, **kwargs
) -> BatchLoader | StreamLoader:
    """The loader that suits the split: from memory, or streamed from files by workers."""
    if isinstance(split, FileSplit):
        return StreamLoader(split, batch_size, num_workers=num_workers, **kwargs)
    return BatchLoader(split, batch_size, **kwargs)
