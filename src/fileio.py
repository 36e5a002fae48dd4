"""Writing files atomically: a temporary file in the same folder, then ``os.replace``.

A crash or a ``kill -9`` therefore leaves either the old file or the new one, never half of one;
and so does a full disk, which is reported as ``DiskFull`` (see ``out_of_space``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NO_SPACE_WORDS = ("No space left on device", "Disk quota exceeded")
FULL_BELOW = 1 << 20  # bytes free: a write that failed with less than this left ran out of room


class DiskFull(OSError):
    """A file could not be written because its disk (or the user's quota) is full."""

    def __init__(self, path: Path):
        super().__init__(errno.ENOSPC, f"no space left on the disk to write {path}", str(path))


def out_of_space(err: BaseException, folder: Path | None = None) -> bool:
    """Whether ``err`` came of a full disk or quota: by its errno, by the words of libraries that
    keep only the message (safetensors), or, for ``folder``'s writes that lose both (torch.save's
    "unexpected pos"), by a disk left with less than ``FULL_BELOW`` free when the write failed."""
    if isinstance(err, OSError) and err.errno in NO_SPACE:
        return True
    if any(words in str(err) for words in NO_SPACE_WORDS):
        return True
    if folder is not None and isinstance(err, (OSError, RuntimeError)):
        try:
            return shutil.disk_usage(folder).free < FULL_BELOW
        except OSError:
            return False
    return False


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, then move the finished file into place in one step."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except Exception as err:
        if not isinstance(err, DiskFull) and out_of_space(err, path.parent):  # before tmp goes
            raise DiskFull(path) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def is_hidden(path: Path, under: Path) -> bool:
    """Whether ``path`` is, or lies in, a hidden file or folder (a name starting with a dot)
    below ``under``, such as the decoded-image cache."""
    return any(part.startswith(".") for part in path.relative_to(under).parts)
