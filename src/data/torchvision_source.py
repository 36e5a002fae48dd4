"""torchvision's datasets (MNIST, CIFAR, SVHN, GTSRB, Caltech101, ...), downloaded on first use.

Each is decoded once into uint8 tensors and cached beside the data. The dataset config names the
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

from src.data.cache import CACHE_FOLDER, cache_file, load_split, save_split
from src.data.core import Dataset, Split, assemble_splits, channel_stats, worker_count
from src.data.sizes import check_size_and_channels, fit_split
from src.data.transforms import resize_uint8
from src.errors import ConfigError, last_line
from src.images import to_tensor

log = logging.getLogger(__name__)

# Datasets whose images are already one uint8 array in memory: read as they are, no decoding.
IN_MEMORY_CLASSES = (tv.MNIST, tv.CIFAR10, tv.SVHN)  # with subclasses: FashionMNIST, CIFAR100, ...


def load_torchvision_dataset(cfg: DictConfig) -> Dataset:
    dataset_class = getattr(tv, str(cfg.class_name), None)
    if not isinstance(dataset_class, type) or not issubclass(dataset_class, tv.VisionDataset):
        raise ConfigError(
            f"dataset.class_name={cfg.class_name!r} is not a dataset in torchvision.datasets; "
            "use its class name, e.g. CIFAR10."
        )
    check_size_and_channels(cfg.image_size, cfg.channels)
    root = Path(cfg.root) / (cfg.subdir or "")
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else root / CACHE_FOLDER
    official: dict[str, Split] = {}
    class_names: list[str] = []
    for part in ("train", "val", "test"):
        if cfg.splits.get(part) is not None:
            official[part], class_names = _read_official_split(
                dataset_class, root, part, cfg.splits[part], cfg, cache_dir
            )
    if "train" not in official:
        raise ConfigError(f"dataset.splits.train is missing for dataset={cfg.name}; it needs one.")
    train, val, test = assemble_splits(
        official["train"], official.get("val"), official.get("test"), cfg, class_names
    )
    mean, std = channel_stats(train.images)
    return Dataset(cfg.name, train, val, test, class_names, mean, std)


def _read_official_split(dataset_class, root, part, kwargs, cfg, cache_dir) -> tuple[Split, list[str]]:
    kwargs = OmegaConf.to_container(kwargs) if isinstance(kwargs, DictConfig) else dict(kwargs)
    in_memory = issubclass(dataset_class, IN_MEMORY_CLASSES)
    key = {"source": "torchvision", "class": dataset_class.__name__, "kwargs": kwargs}
    if not in_memory:  # decoded from files, so stored at the model's size and channels
        key.update(image_size=cfg.image_size, channels=cfg.channels)
    path = cache_file(cache_dir, f"{cfg.name}-{part}", key)
    cached = load_split(path)
    if cached is not None:
        split, class_names = cached[0], cached[1]["class_names"]
    else:
        dataset = _open(dataset_class, root, kwargs, cfg)
        split = _as_tensors(dataset) if in_memory else _decode(dataset, cfg, part)
        class_names = _class_names(dataset, cfg, split.labels)
        save_split(path, split, {"class_names": class_names})
    return _as_configured(split, cfg, part), class_names


def _as_configured(split: Split, cfg: DictConfig, part: str) -> Split:
    """The native arrays (cached as they are) at dataset.image_size and dataset.channels."""
    fitted = fit_split(split, int(cfg.image_size), int(cfg.channels))
    if fitted is not split:
        _, c, h, w = split.images.shape
        log.info(
            "%s %s: %dx%d images with %d channel(s) converted to dataset.image_size=%d, "
            "dataset.channels=%d", cfg.name, part, h, w, c, cfg.image_size, cfg.channels,
        )
    return fitted


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
    """Images read from files one by one (variable sizes): decoded once, by worker processes."""
    dataset.transform = ToModelInput(int(cfg.channels), int(cfg.image_size))
    loader = DataLoader(dataset, batch_size=256, num_workers=worker_count(cfg.num_workers))
    images, labels = [], []
    for x, y in tqdm(loader, desc=f"decoding {cfg.name} {part}", unit="batch", leave=False, disable=None):
        images.append(x)
        labels.append(torch.as_tensor(y))
    return Split(torch.cat(images), torch.cat(labels).long())


def _class_names(dataset: tv.VisionDataset, cfg: DictConfig, labels: torch.Tensor) -> list[str]:
    if cfg.get("class_names"):
        return [str(name) for name in cfg.class_names]
    names = getattr(dataset, "classes", None) or getattr(dataset, "categories", None)
    if names:
        return [str(name) for name in names]
    return [str(i) for i in range(int(labels.max()) + 1)]
