"""Local image folders: one folder per class, optionally under train/, val/ and test/.

    dataset_path/pets/cat/*.jpg, dataset_path/pets/dog/*.png              one level of class folders
    dataset_path/pets/train/cat/..., .../val/cat/..., .../test/cat/...    official splits

Classes are sorted by name. Splits a folder lacks are held out of train (stratified, seeded).
Images of any mode are converted to the dataset's channels and resized to the model's size. If the
decoded images fit in ``dataset.max_memory_mb`` they are decoded once, cached beside the data and
batched from memory; otherwise DataLoader workers decode them as training goes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from src.data.cache import (
    CACHE_FOLDER,
    cache_file,
    files_fingerprint,
    load_index,
    load_split,
    save_index,
    save_split,
)
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
from src.data.files import ImageFiles, decode_all, sample_stats, scan_greyness
from src.data.images import IMAGE_EXTENSIONS, is_image_file
from src.errors import ConfigError
from src.fileio import is_hidden

log = logging.getLogger(__name__)

SPLIT_FOLDERS = ("train", "val", "test")
# Other names that split folders often have (Kaggle's layouts): said, so they do not become classes
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def load_folder_dataset(cfg: DictConfig, listing_only: bool = False) -> Dataset:
    if not cfg.root:
        raise ConfigError(
            "dataset.root is not set; point it at your image folder, "
            "e.g. dataset.root=dataset_path/pets."
        )
    return read_image_folder(Path(cfg.root).expanduser(), cfg, listing_only)


def read_image_folder(root: Path, cfg: DictConfig, listing_only: bool = False) -> Dataset:
    """The Dataset held in ``root``; ``cfg`` is the dataset config (fractions, channels, loader...).

    ``listing_only``: the files are listed, not opened, and no mean/std is measured (to look at a
    few images; a held-out split can then differ from training's if some files are unreadable)."""
    _check_settings(cfg)
    layout = split_folders(root)
    class_names = class_folders(layout["train"])
    listings = {part: list_images(folder, class_names) for part, folder in layout.items()}
    if listing_only:
        return _listed(cfg, listings, class_names)

    channels_setting = _channels_setting(cfg.channels)
    size = int(cfg.image_size)
    total = sum(len(files) for files, _ in listings.values())
    memory_mb = total * (channels_setting or 3) * size * size / 2**20
    mode = loader_mode(cfg.loader, memory_mb, cfg.max_memory_mb)
    log.info(
        "%s: %d images in %d classes (%s), %s at %dx%d (%.0f MB decoded)",
        root,
        total,
        len(class_names),
        "/".join(layout),
        "held in memory" if mode == "memory" else "streamed from disk",
        size,
        size,
        memory_mb,
    )
    read = _read_into_memory if mode == "memory" else _read_as_files
    splits = read(root, listings, channels_setting, size, cfg)

    _check_every_class_has_images(splits["train"], class_names, layout["train"])
    train, val, test = assemble_splits(
        splits["train"], splits.get("val"), splits.get("test"), cfg, class_names
    )
    if isinstance(train, Split):
        mean, std = channel_stats(train.images)
    else:
        mean, std = sample_stats(train, cfg.split_seed, worker_count(cfg.num_workers))
    return Dataset(cfg.name, train, val, test, class_names, mean, std)


def _listed(cfg: DictConfig, listings, class_names: list[str]) -> Dataset:
    channels = _channels_setting(cfg.channels) or 3
    splits = {
        part: FileSplit(files, labels, channels, int(cfg.image_size))
        for part, (files, labels) in listings.items()
    }
    train, val, test = assemble_splits(
        splits["train"], splits.get("val"), splits.get("test"), cfg, class_names
    )
    return Dataset(cfg.name, train, val, test, class_names, [], [])


def split_folders(root: Path) -> dict[str, Path]:
    """{'train': ..., 'val': ..., 'test': ...} for the split folders found, else {'train': root}."""
    if not root.is_dir():
        raise ConfigError(
            f"dataset.root={root} is not a folder; put one folder of images per class there "
            "(or train/ and test/ folders of class folders), or point dataset.root at your images."
        )
    folders = _subfolders(root)
    _refuse_other_split_names(root, folders)
    present = [name for name in SPLIT_FOLDERS if name in folders]
    if not present:
        return {"train": root}
    if "train" not in present:
        raise ConfigError(
            f"dataset.root={root} has {present[0]}/ but no train/ folder; add train/ with one "
            "folder per class, or use one level of class folders and let the split be made."
        )
    others = sorted(set(folders) - set(SPLIT_FOLDERS))
    if others:
        raise ConfigError(
            f"dataset.root={root} has train/ beside other folders ({', '.join(others)}); keep only "
            "train/, val/ and test/ there, each holding one folder per class."
        )
    return {name: root / name for name in present}


def _refuse_other_split_names(root: Path, folders: list[str]) -> None:
    """Train/ and Test/, or training/ and validation/, each holding class folders, are split
    folders by another name: taken as they are, they would be two classes."""
    renames = {
        name: SPLIT_NAMES[name.lower()]
        for name in folders
        if name.lower() in SPLIT_NAMES and name not in SPLIT_FOLDERS and _subfolders(root / name)
    }
    if renames:
        listed = ", ".join(f"{old}/ to {new}/" for old, new in renames.items())
        raise ConfigError(
            f"dataset.root={root} has split folders by other names; rename {listed} (split "
            "folders are train/, val/ and test/, lower case, each holding one folder per class)."
        )


def class_folders(folder: Path) -> list[str]:
    """The sorted class names: the subfolders of ``folder``."""
    names = sorted(_subfolders(folder))
    if not names:
        holds_images = any(is_image_file(p) for p in folder.iterdir())
        raise ConfigError(
            f"{folder} has {'images but ' if holds_images else ''}no class folders; put the images "
            "of each class in a folder named after the class (e.g. cat/, dog/)."
        )
    if len(names) == 1:
        raise ConfigError(
            f"{folder} has a single class folder, {names[0]}/, and a classifier needs two or more; "
            f"if the classes are folders inside it, set dataset.root={folder / names[0]}."
        )
    return names


def list_images(folder: Path, class_names: list[str]) -> tuple[list[Path], torch.Tensor]:
    """The image files in each class folder of ``folder`` (found recursively) and their labels."""
    unknown = sorted(set(_subfolders(folder)) - set(class_names))
    if unknown:
        raise ConfigError(
            f"{folder} has class folders that train/ lacks ({', '.join(unknown)}); every class "
            "needs training images, so add them to train/ or remove these folders."
        )
    files: list[Path] = []
    labels: list[int] = []
    ignored = 0
    for label, name in enumerate(class_names):
        class_dir = folder / name
        if not class_dir.is_dir():  # a val/ or test/ folder may lack a class
            continue
        found = [
            p for p in sorted(class_dir.rglob("*")) if p.is_file() and not is_hidden(p, class_dir)
        ]
        images = [p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS]
        ignored += len(found) - len(images)
        if not images:
            raise ConfigError(
                f"{class_dir} has no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}); "
                "add images or remove the folder."
            )
        files += images
        labels += [label] * len(images)
    if ignored:
        log.warning(
            "ignored %d files under %s that are not images by their extension", ignored, folder
        )
    return files, torch.tensor(labels, dtype=torch.long)


def _cache_dir(root: Path, cfg: DictConfig) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else root / CACHE_FOLDER


def _read_into_memory(root, listings, channels_setting, size, cfg) -> dict[str, Split]:
    """Every image decoded once (or read from the cache) into uint8 tensors."""
    cache_dir = _cache_dir(root, cfg)
    splits: dict[str, Split] = {}
    for part, (files, labels) in listings.items():
        key = {
            "source": "folder",
            "root": str(root.resolve()),
            "part": part,
            "image_size": size,
            "channels": channels_setting,
            "files": files_fingerprint(files, root),
        }
        path = cache_file(cache_dir, f"{root.name}-{part}", key)
        cached = load_split(path)
        if cached is None:
            cached = _decode_split(
                files, labels, channels_setting, size, cfg, layout_name(root, part)
            )
            save_split(path, *cached)
        split, meta = cached
        _report_unreadable(meta["unreadable"], len(files), layout_name(root, part), cfg)
        splits[part] = split
    if channels_setting is None:  # auto: grey only when every image of every split is grey
        channels = 1 if all(s.channels == 1 for s in splits.values()) else 3
        splits = {
            p: Split(s.images.expand(-1, channels, -1, -1).contiguous(), s.labels)
            if s.channels != channels
            else s
            for p, s in splits.items()
        }
    return splits


def _decode_split(files, labels, channels_setting, size, cfg, where: str) -> tuple[Split, dict]:
    decoded = decode_all(
        ImageFiles(files, labels, channels_setting or 3, size),
        worker_count(cfg.num_workers),
        f"decoding {where}",
    )
    if not len(decoded.labels):
        raise ConfigError(
            f"none of the {len(files)} image files of {where} could be read "
            f"(first: {decoded.errors[0]})."
        )
    images = decoded.images
    if channels_setting is None and all(decoded.grey):
        images = images[:, :1].contiguous()  # grey files were read as three equal channels
    split = Split(images, decoded.labels)
    return split, {"unreadable": decoded.errors}


def _read_as_files(root, listings, channels_setting, size, cfg) -> dict[str, FileSplit]:
    """File lists for DataLoader workers; each header is read once to find unreadable files and
    greys, and what it said is kept beside the data for the next start."""
    parts: dict[str, tuple[list[Path], torch.Tensor, list[bool]]] = {}
    for part, (files, labels) in listings.items():
        found = _scanned(files, root, part, _cache_dir(root, cfg))
        unreadable = [str(f) for f in found if isinstance(f, ConfigError)]
        _report_unreadable(unreadable, len(files), layout_name(root, part), cfg)
        keep = [i for i, f in enumerate(found) if not isinstance(f, ConfigError)]
        parts[part] = ([files[i] for i in keep], labels[keep], [found[i] for i in keep])
    if channels_setting is None:
        channels = 1 if all(all(grey) for _, _, grey in parts.values()) else 3
    else:
        channels = channels_setting
    return {
        part: FileSplit(files, labels, channels, size) for part, (files, labels, _) in parts.items()
    }


def _scanned(files: list[Path], root: Path, part: str, cache_dir: Path) -> list[bool | ConfigError]:
    """``scan_greyness`` of the files, kept in an index beside the data named by the files'
    fingerprint, so a restart reads it instead of opening every file's header again."""
    key = {
        "source": "folder-index",
        "root": str(root.resolve()),
        "part": part,
        "files": files_fingerprint(files, root),
    }
    path = cache_file(cache_dir, f"{root.name}-{part}-index", key, suffix=".json")
    entries = load_index(path)
    if entries is not None and len(entries) == len(files):
        return [entry if isinstance(entry, bool) else ConfigError(entry) for entry in entries]
    found = scan_greyness(files, f"checking {part}")
    save_index(path, [f if isinstance(f, bool) else str(f) for f in found])
    return found


def layout_name(root: Path, part: str) -> str:
    return f"{root}/{part}" if (root / part).is_dir() else str(root)


def _report_unreadable(unreadable: list[str], total: int, where: str, cfg: DictConfig) -> None:
    if not unreadable:
        return
    what = (
        f"{len(unreadable)} of {total} image files of {where} could not be read "
        f"(first: {unreadable[0]})"
    )
    if cfg.bad_images == "error":
        raise ConfigError(
            f"{what}; fix or remove them, or set dataset.bad_images=skip to train without them."
        )
    log.warning("%s; skipped them (set dataset.bad_images=error to stop instead)", what)


def _check_every_class_has_images(train: AnySplit, class_names: list[str], folder: Path) -> None:
    counts = np.bincount(train.labels.numpy(), minlength=len(class_names))
    empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise ConfigError(
            f"{folder / empty[0]} has no readable training images; add images or remove the folder."
        )


def _channels_setting(value) -> int | None:
    """dataset.channels: None for 'auto' (grey if every image is grey, else RGB), or 1 or 3."""
    if value == "auto":
        return None
    if value not in (1, 3):
        raise ConfigError(
            f"dataset.channels={value} is not supported; use auto, 1 (grey) or 3 (RGB)."
        )
    return int(value)


def _check_settings(cfg: DictConfig) -> None:
    """The folder settings that are checked before any file is read."""
    _channels_setting(cfg.channels)
    if cfg.bad_images not in ("skip", "error"):
        raise ConfigError(f"dataset.bad_images={cfg.bad_images!r} is not known; use skip or error.")
    if cfg.loader not in ("auto", "memory", "stream"):
        raise ConfigError(
            f"dataset.loader={cfg.loader!r} is not known; use auto, memory or stream."
        )


def _subfolders(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
