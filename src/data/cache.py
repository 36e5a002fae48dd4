"""Decoded images cached on disk beside the data, so the second run starts in a second or two.

A cache file is a safetensors file (no pickle) named by a hash of everything that decides its
contents: the source, the files' names, sizes and modification times, the stored image size and
channels. Change any of them and the name changes, so a stale cache is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from src.data.core import Split
from src.fileio import atomic_write, is_hidden

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the decoding changes, to invalidate every cache
CACHE_FOLDER = ".vit-cache"


def cache_file(folder: Path, label: str, key: dict[str, Any], suffix: str = ".safetensors") -> Path:
    digest = hashlib.sha256(
        json.dumps({"version": CACHE_VERSION, **key}, sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    return folder / f"{label}-{digest}{suffix}"


def files_fingerprint(files: list[Path], root: Path) -> str:
    """Changes when a file is added, removed, renamed, or rewritten."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def folder_fingerprint(folder: Path) -> str | None:
    """``files_fingerprint`` of every file under ``folder`` (hidden ones, such as the cache, left
    out), or None when there is no such folder yet."""
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not is_hidden(p, folder))
    return files_fingerprint(files, folder)


def load_index(path: Path) -> list | None:
    """A JSON list cached beside the data (a folder's header scan), or None."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def save_index(path: Path, entries: list) -> None:
    """Writes the list; a folder that cannot be written only costs the scan next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(entries)))
    except OSError as err:
        log.warning("could not write %s (%s); the next run will scan the files again", path, err)


def load_split(path: Path) -> tuple[Split, dict[str, Any]] | None:
    """The cached split and its metadata, or None when there is no usable cache file."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in ("images", "labels")}
            meta = json.loads(handle.metadata()["meta"])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        log.warning("ignoring the unreadable cache file %s (%s); decoding again", path, err)
        return None
    log.info("read decoded images from the cache %s", path)
    return Split(tensors["images"], tensors["labels"]), meta


def save_split(path: Path, split: Split, meta: dict[str, Any]) -> None:
    """Writes the cache file; a folder that cannot be written only costs the cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"images": split.images.contiguous(), "labels": split.labels.contiguous()}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"meta": json.dumps(meta)}))
    except OSError as err:
        log.warning(
            "could not write the cache %s (%s); the next run will decode the images again "
            "(set dataset.cache_dir to a writable folder to cache them)",
            path,
            err,
        )
        return
    log.info("cached the decoded images in %s", path)
