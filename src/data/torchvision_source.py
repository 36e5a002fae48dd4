"""torchvision's datasets (MNIST, CIFAR, SVHN, GTSRB, Caltech101, ...), downloaded on first use.

Each is decoded once into uint8 tensors and cached beside the data (the cache's name holds a
fingerprint of the dataset's files); those decoded from image files (GTSRB, Caltech-101) are
streamed instead when they would not fit dataset.max_memory_mb. The dataset config names the
torchvision class and the constructor arguments of each official split; a split it does not have
(validation, usually) is held out of train, stratified and seeded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision.datasets as tv
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from src.data.cache import CACHE_FOLDER, cache_file, folder_fingerprint, load_split, save_split
from src.data.core import (
    AnySplit,
    Dataset,
    FileSplit,
    Split,
    assemble_splits,
    channel_stats,
    loader_mode,
    worker_count,
)
from src.data.files import ImageFiles, decode_all, sample_stats
from src.data.images import to_tensor
from src.data.sizes import check_size_and_channels, fit_split
from src.data.transforms import resize_uint8
from src.errors import ConfigError, last_line

log = logging.getLogger(__name__)

# Datasets whose images are already one uint8 array in memory: read as they are, no decoding.
IN_MEMORY_CLASSES = (tv.MNIST, tv.CIFAR10, tv.SVHN)  # with subclasses: FashionMNIST, CIFAR100, ...


def load_torchvision_dataset(cfg: DictConfig, listing_only: bool = False) -> Dataset:
    """The dataset ``cfg`` names. ``listing_only``: datasets of image files are listed, not
    decoded, and no mean/std is measured (to look at a few images)."""
    dataset_class = getattr(tv, str(cfg.class_name), None)
    if not isinstance(dataset_class, type) or not issubclass(dataset_class, tv.VisionDataset):
        raise ConfigError(
            f"dataset.class_name={cfg.class_name!r} is not a dataset in torchvision.datasets; "
            "use its class name, e.g. CIFAR10."
        )
    check_size_and_channels(cfg.image_size, cfg.channels)
    if cfg.loader not in ("auto", "memory", "stream"):
        raise ConfigError(
            f"dataset.loader={cfg.loader!r} is not known; use auto, memory or stream."
        )
    root = Path(cfg.root).expanduser() / (cfg.subdir or "")
    reader = _SplitReader(dataset_class, root, cfg, "stream" if listing_only else cfg.loader)
    official: dict[str, AnySplit] = {}
    class_names: list[str] = []
    for part in ("train", "val", "test"):
        if cfg.splits.get(part) is not None:
            official[part], class_names = reader.read(part, cfg.splits[part])
    if "train" not in official:
        raise ConfigError(f"dataset.splits.train is missing for dataset={cfg.name}; it needs one.")
    train, val, test = assemble_splits(
        official["train"], official.get("val"), official.get("test"), cfg, class_names
    )
    if listing_only and isinstance(train, FileSplit):
        mean, std = [], []
    elif isinstance(train, Split):
        mean, std = channel_stats(train.images)
    else:
        mean, std = sample_stats(train, cfg.split_seed, worker_count(cfg.num_workers))
    return Dataset(cfg.name, train, val, test, class_names, mean, std)


class _SplitReader:
    """Reads the official splits of one torchvision dataset: from the cache, from its arrays, or
    from its image files (decoded into memory, or listed to be streamed)."""

    def __init__(self, dataset_class, root: Path, cfg: DictConfig, loader: str):
        self.dataset_class, self.root, self.cfg, self.loader = dataset_class, root, cfg, loader
        self.in_memory = issubclass(dataset_class, IN_MEMORY_CLASSES)
        self.cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else root / CACHE_FOLDER
        self.files_folder = root / (cfg.folder or "")

    def read(self, part: str, kwargs) -> tuple[AnySplit, list[str]]:
        kwargs = OmegaConf.to_container(kwargs) if isinstance(kwargs, DictConfig) else dict(kwargs)
        cache = self._cache_path(part, kwargs)
        if cache is not None and self._may_read(cache):
            cached = load_split(cache)
            if cached is not None:
                return self._as_configured(cached[0], part), cached[1]["class_names"]

        dataset = _open(self.dataset_class, self.root, kwargs, self.cfg)
        if self.in_memory:
            split = _as_tensors(dataset)
        else:
            files = _image_files(dataset)
            size, channels = int(self.cfg.image_size), int(self.cfg.channels)
            memory_mb = len(dataset) * channels * size * size / 2**20
            mode = loader_mode(self.loader, memory_mb, self.cfg.max_memory_mb)
            if mode == "stream" and files is not None:
                log.info(
                    "%s %s: %d images streamed from disk at %dx%d (%.0f MB decoded, over "
                    "dataset.max_memory_mb=%s)",
                    self.cfg.name,
                    part,
                    len(files),
                    size,
                    size,
                    memory_mb,
                    self.cfg.max_memory_mb,
                )
                paths = [path for path, _ in files]
                labels = torch.tensor([label for _, label in files], dtype=torch.long)
                split = FileSplit(paths, labels, channels, size)
                return split, _class_names(dataset, self.cfg, labels)
            split = self._decode(dataset, files, part)
        class_names = _class_names(dataset, self.cfg, split.labels)
        cache = cache or self._cache_path(part, kwargs)  # the files are there now
        if cache is not None:
            save_split(cache, split, {"class_names": class_names})
        return self._as_configured(split, part), class_names

    def _cache_path(self, part: str, kwargs: dict) -> Path | None:
        """Named by everything that decides the decoded images, the files' fingerprint included;
        None while the files are not there (before the download)."""
        fingerprint = folder_fingerprint(self.files_folder)
        if fingerprint is None:
            return None
        key = {
            "source": "torchvision",
            "class": self.dataset_class.__name__,
            "kwargs": kwargs,
            "files": fingerprint,
        }
        if not self.in_memory:  # decoded from files, so stored at the configured size and channels
            key.update(image_size=self.cfg.image_size, channels=self.cfg.channels)
        return cache_file(self.cache_dir, f"{self.cfg.name}-{part}", key)

    def _may_read(self, cache: Path) -> bool:
        """Arrays are always read from the cache; decoded files only when they are not to be
        streamed (``stream``, or ``auto`` with a cache over dataset.max_memory_mb)."""
        if self.in_memory or self.loader == "memory" or not cache.is_file():
            return True
        return self.loader == "auto" and cache.stat().st_size / 2**20 <= self.cfg.max_memory_mb

    def _decode(self, dataset, files, part: str) -> Split:
        if files is None:  # a dataset whose items are not one file each: read through torchvision
            return _decode(dataset, self.cfg, part)
        labels = torch.tensor([label for _, label in files], dtype=torch.long)
        decoded = decode_all(
            ImageFiles(
                [path for path, _ in files],
                labels,
                int(self.cfg.channels),
                int(self.cfg.image_size),
            ),
            worker_count(self.cfg.num_workers),
            f"decoding {self.cfg.name} {part}",
        )
        if decoded.errors:
            raise ConfigError(
                f"dataset={self.cfg.name}: {len(decoded.errors)} of {len(files)} image files could "
                f"not be read (first: {decoded.errors[0]}); download the dataset again."
            )
        return Split(decoded.images, decoded.labels)

    def _as_configured(self, split: Split, part: str) -> Split:
        """The native arrays (cached as they are) at dataset.image_size and dataset.channels."""
        cfg = self.cfg
        fitted = fit_split(split, int(cfg.image_size), int(cfg.channels))
        if fitted is not split:
            _, c, h, w = split.images.shape
            log.info(
                "%s %s: %dx%d images with %d channel(s) converted to dataset.image_size=%d, "
                "dataset.channels=%d",
                cfg.name,
                part,
                h,
                w,
                c,
                cfg.image_size,
                cfg.channels,
            )
        return fitted


def _image_files(dataset: tv.VisionDataset) -> list[tuple[Path, int]] | None:
    """(file, label) of every item, for the datasets that read one image file per item."""
    if isinstance(dataset, tv.GTSRB):
        return [(Path(path), int(label)) for path, label in dataset._samples]
    if isinstance(dataset, tv.Caltech101) and dataset.target_type == ["category"]:
        folder = Path(dataset.root) / "101_ObjectCategories"
        return [
            (folder / dataset.categories[y] / f"image_{i:04d}.jpg", int(y))
            for i, y in zip(dataset.index, dataset.y)
        ]
    if isinstance(dataset, tv.DatasetFolder):
        return [(Path(path), int(label)) for path, label in dataset.samples]
    return None


def _open(dataset_class, root: Path, kwargs: dict, cfg: DictConfig) -> tv.VisionDataset:
    try:
        return dataset_class(root=str(root), download=bool(cfg.download), **kwargs)
    except (RuntimeError, OSError, ImportError) as err:  # no network, no files, a bad checksum
        reason = last_line(err)
        action = "download" if cfg.download else "find"
        raise ConfigError(
            f"dataset={cfg.name}: torchvision could not {action} {dataset_class.__name__} in "
            f"{root} ({reason}); without a network, put {cfg.files} in {root} yourself, or set "
            "dataset.root to a folder that has them."
        ) from None


def _as_tensors(dataset: tv.VisionDataset) -> Split:
    """The uint8 array these datasets already hold, as (N, C, H, W)."""
    if isinstance(dataset, tv.MNIST):  # (N, H, W) tensor
        return Split(dataset.data.unsqueeze(1).contiguous(), torch.as_tensor(dataset.targets))
    if isinstance(dataset, tv.CIFAR10):  # (N, H, W, C) numpy
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        return Split(images, torch.as_tensor(dataset.targets))
    images = torch.from_numpy(dataset.data).contiguous()  # SVHN: (N, C, H, W) numpy
    return Split(images, torch.from_numpy(dataset.labels).long())


class ToModelInput:
    """PIL image -> uint8 (C, S, S): the dataset's channels at the model's size (picklable)."""

    def __init__(self, channels: int, image_size: int):
        self.channels, self.image_size = channels, image_size

    def __call__(self, image) -> torch.Tensor:
        return resize_uint8(to_tensor(image, self.channels), self.image_size)


def _decode(dataset: tv.VisionDataset, cfg: DictConfig, part: str) -> Split:
    """Items read through torchvision one by one, by worker processes, for datasets whose items
    are not one image file each; written into one tensor as they arrive (held once)."""
    size, channels = int(cfg.image_size), int(cfg.channels)
    dataset.transform = ToModelInput(channels, size)
    loader = DataLoader(dataset, batch_size=256, num_workers=worker_count(cfg.num_workers))
    images = torch.empty((len(dataset), channels, size, size), dtype=torch.uint8)
    labels = torch.empty(len(dataset), dtype=torch.long)
    start = 0
    for x, y in tqdm(
        loader, desc=f"decoding {cfg.name} {part}", unit="batch", leave=False, disable=None
    ):
        images[start : start + len(x)] = x
        labels[start : start + len(x)] = torch.as_tensor(y)
        start += len(x)
    return Split(images, labels)


def _class_names(dataset: tv.VisionDataset, cfg: DictConfig, labels: torch.Tensor) -> list[str]:
    if cfg.get("class_names"):
        return [str(name) for name in cfg.class_names]
    names = getattr(dataset, "classes", None) or getattr(dataset, "categories", None)
    if names:
        return [str(name) for name in names]
    return [str(i) for i in range(int(labels.max()) + 1)]
