"""Batches ready for the model, from images held in memory or decoded from files as they go.

Both loaders draw the data order and the augmentation from CPU generators of their own, so a
run's data stream is fixed by its seed, and resume can restore it mid-run. Under torchrun every
process draws the same order (then takes its share of it) but its own augmentation (seed + rank).

Training batches all have the same size: the last partial batch of an epoch is dropped (as timm
and DeiT do), so a compiled model never sees a new shape, and no step waits on odd sizes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from src.data.core import AnySplit, FileSplit, Split
from src.data.files import ImageFiles, collate_decoded, collate_full
from src.data.mixing import MixBatch
from src.data.transforms import (
    BatchAugment,
    channel_tensor,
    move_without_waiting,
    normalize,
    resize,
)
from src.distributed import rank, shard, shard_size
from src.errors import ConfigError

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


def epoch_order(
    n: int,
    generator: torch.Generator,
    shuffle: bool,
    repeats: int = 1,
    batch_size: int = 1,
    sharded: bool = True,
) -> torch.Tensor:
    """The epoch's order, and under torchrun this process's share of it. Shuffled (training)
    orders are padded so every process takes the same number of steps; every process draws the
    same permutation, because all of them seed their order generator alike."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if sharded:
        order = shard(order, pad=shuffle)
    return repeat_in_batches(order, repeats, batch_size) if repeats > 1 else order


def images_per_epoch(n: int, shuffle: bool, sharded: bool) -> int:
    """How many of the split's ``n`` images this process takes in an epoch (``epoch_order``)."""
    return shard_size(n, pad=shuffle) if sharded else n


def training_steps(images: int, batch_size: int) -> int:
    """Full batches in an epoch of ``images`` (the partial one is dropped), or a single batch of
    them all when there are fewer images than a batch."""
    return max(1, images // batch_size)


def repeat_in_batches(order: torch.Tensor, repeats: int, batch_size: int) -> torch.Tensor:
    """Repeated augmentation (Hoffer et al., 2020; DeiT): every batch holds batch_size / repeats
    images, each ``repeats`` times, to be augmented differently. The epoch keeps its length, so it
    sees 1/repeats of the images. The copies sit apart in the batch ([a b c a b c]), so Mixup and
    CutMix, which pair each image with its neighbour, do not mix an image with itself."""
    per_batch = max(1, batch_size // repeats)
    unique = order[: -(-len(order) // repeats)]
    return torch.cat([chunk.repeat(repeats) for chunk in unique.split(per_batch)])[: len(order)]


class _BatchFinisher:
    """uint8 batch on the device -> resize -> augment (training) -> normalise -> mix (training).

    Without mixing the targets are the class indices; with it, (B, classes) probabilities.
    ``order_generator`` draws the data order, ``generator`` the augmentation."""

    def __init__(
        self,
        image_size,
        mean,
        std,
        device,
        augment: BatchAugment | None,
        mix: MixBatch | None,
        seed: int,
        sharded: bool,
    ):
        self.image_size = image_size
        self.mean, self.std = channel_tensor(mean, device), channel_tensor(std, device)
        self.device = device
        self.augment = augment
        self.mix = mix if mix is not None and mix.active else None
        self.sharded = sharded
        self.order_generator = torch.Generator().manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed + (rank() if sharded else 0))

    def finish(self, images: torch.Tensor, labels: torch.Tensor) -> Batch:
        x = resize(images, self.image_size)
        if self.augment is not None:
            x = self.augment(x, self.generator)
        x = normalize(x, self.mean, self.std)
        if self.mix is not None:
            return self.mix(x, labels, self.generator)
        return x, labels

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Where the data order and the augmentation draws are, for resuming mid-run."""
        return {"order": self.order_generator.get_state(), "augment": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.order_generator.set_state(state["order"])
        self.generator.set_state(state["augment"])


class BatchLoader(_BatchFinisher):
    """Batches of a Split in memory (on the training device), indexed without copies to spare."""

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
        sharded: bool = True,
    ):
        super().__init__(image_size, mean, std, device, augment, mix, seed, sharded)
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.repeats = repeats

    def __len__(self) -> int:
        images = images_per_epoch(len(self.labels), self.shuffle, self.sharded)
        if self.shuffle:
            return training_steps(images, self.batch_size)
        return -(-images // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = epoch_order(
            len(self.labels),
            self.order_generator,
            self.shuffle,
            self.repeats,
            self.batch_size,
            self.sharded,
        )
        order = move_without_waiting(order, self.device)  # once an epoch, not once a batch
        for step in range(len(self)):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            yield self.finish(self.images[idx], self.labels[idx])


class _GeneratorOrder(Sampler[int]):
    """A DataLoader sampler whose order comes from the loader's own generator."""

    def __init__(
        self,
        n: int,
        generator: torch.Generator,
        shuffle: bool,
        repeats: int,
        batch_size: int,
        sharded: bool,
    ):
        self.n, self.generator, self.shuffle = n, generator, shuffle
        self.repeats, self.batch_size, self.sharded = repeats, batch_size, sharded

    def __len__(self) -> int:
        return images_per_epoch(self.n, self.shuffle, self.sharded)

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(
            self.n, self.generator, self.shuffle, self.repeats, self.batch_size, self.sharded
        )
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
        sharded: bool = True,
        bad_images: str = "skip",
    ):
        super().__init__(image_size, mean, std, device, augment, mix, seed, sharded)
        sampler = _GeneratorOrder(
            len(split), self.order_generator, shuffle, repeats, batch_size, sharded
        )
        self.shuffle, self.bad_images = shuffle, bad_images
        self.loader = DataLoader(
            ImageFiles.of(split),
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            # Training keeps every batch full: unreadable files are stood in for by readable
            # ones of the same batch, so every process takes the same number of equal steps.
            collate_fn=collate_full if shuffle else collate_decoded,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
            drop_last=shuffle and len(sampler) >= batch_size,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            if batch.errors and self.bad_images == "error":
                raise ConfigError(
                    f"an image could not be read ({batch.errors[0]}) and dataset.bad_images=error "
                    "stops the run; repair or remove the file, then resume the run (or train "
                    "with dataset.bad_images=skip)."
                )
            for error in batch.errors:  # files that went bad after the dataset was checked
                log.warning(
                    "%s an unreadable image: %s", "replaced" if self.shuffle else "skipped", error
                )
            if not len(batch.labels):
                if self.shuffle:
                    raise ConfigError(
                        f"every image of a training batch could not be read (first: "
                        f"{batch.errors[0]}); the files changed after the dataset was listed, so "
                        "repair or remove them and resume the run."
                    )
                continue
            images = batch.images.to(self.device, non_blocking=True)
            yield self.finish(images, batch.labels.to(self.device, non_blocking=True))


def make_batches(
    split: AnySplit, batch_size: int, num_workers: int = 0, bad_images: str = "skip", **kwargs
) -> BatchLoader | StreamLoader:
    """The loader that suits the split: from memory, or streamed from files by workers (which
    meet a file that went bad after the dataset was checked as ``dataset.bad_images`` says)."""
    if isinstance(split, FileSplit):
        return StreamLoader(
            split, batch_size, num_workers=num_workers, bad_images=bad_images, **kwargs
        )
    return BatchLoader(split, batch_size, **kwargs)
