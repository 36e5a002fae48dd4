"""Writing files atomically (a temporary file in the same folder, then ``os.replace``), and
reading them whole.

A crash or a ``kill -9`` therefore leaves either the old file or the new one, never half of one;
and so does a full disk, which is reported as ``DiskFull`` (see ``out_of_space``). A process killed
mid-write leaves its temporary file (``.NAME.PID.tmp``), which ``remove_stale_temporaries`` clears.

A file damaged all the same (emptied, cut short by a copy, overwritten) is read by ``read_json``
(deploy/files.py's), ``read_yaml``, ``read_csv`` or ``check_safetensors``, which raise
``DamagedFile``: one sentence with the path, what is wrong with it and the ``fix`` the caller gives
(docs: guide/reliability.md).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from safetensors import SafetensorError, safe_open

# Below src/, as src/errors.py's classes are (a ground-floor module imports no other); the
# torch-free predictor reads model.json with the same code.
from deploy.errors import DamagedFile
from deploy.files import read_json, read_text  # noqa: F401  (read_json: for the workbench)

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


TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.tmp")  # atomic_write's unfinished file


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Removes the unfinished files (``.NAME.PID.tmp``) that processes killed mid-write left under
    ``folder``, keeping those of a process still alive (this one's excepted: the caller writes
    nothing meanwhile); returns those removed."""
    removed = []
    for path in sorted(Path(folder).rglob(".*.tmp")):
        match = TEMPORARY.fullmatch(path.name)
        if match and path.is_file() and not _other_live_process(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _other_live_process(pid: int) -> bool:
    return pid != os.getpid() and process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (another user's counts). 0 and negative
    numbers name no one process (os.kill would signal a whole group), so they are not alive."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no process can have
        return False
    except PermissionError:  # another user's
        return True
    return True


def read_yaml(path: Path, fix: str) -> DictConfig | ListConfig:
    """A YAML file as OmegaConf reads it (.hydra/config.yaml, .hydra/overrides.yaml)."""
    text = read_text(path, fix)
    try:
        return OmegaConf.load(io.StringIO(text))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "unreadable"
        raise DamagedFile(path, f"not YAML: {problem}{where}", fix) from None
    except OSError:  # OmegaConf's word for a document that is a lone number or string
        raise DamagedFile(path, "not a YAML list or mapping", fix) from None


def read_csv(path: Path, fix: str, column: str, numeric: bool = False) -> pd.DataFrame:
    """A CSV table with a header naming ``column`` (whose values are numbers, if ``numeric``),
    and as many values in every row as in the header."""
    text = read_text(path, fix)
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
    except csv.Error as err:
        raise DamagedFile(path, f"not a CSV table: {err}", fix) from None
    header = rows[0] if rows else []
    if column not in header:
        raise DamagedFile(path, f"not a CSV table with a header naming its {column} column", fix)
    for number, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            short = "cut short: " if number == len(rows) - 1 and len(row) < len(header) else ""
            values = f"{len(row)} value" + ("s" if len(row) != 1 else "")
            what = f"{short}row {number} has {values}, the header {len(header)}"
            raise DamagedFile(path, what, fix)
    frame = pd.read_csv(io.StringIO(text))
    if numeric and not pd.api.types.is_numeric_dtype(frame[column]):
        raise DamagedFile(path, f"its {column} column holds more than numbers", fix)
    return frame


def check_safetensors(path: Path, fix: str) -> None:
    """That a weights file is a whole safetensors file (its header read, no tensor loaded)."""
    try:
        with safe_open(str(path), framework="np"):
            pass
    except (SafetensorError, OSError) as err:
        raise damaged_safetensors(path, err, fix) from None


def damaged_safetensors(path: Path, err: BaseException, fix: str) -> DamagedFile:
    """The sentence for a weights file that safetensors could not read (``err``, its error)."""
    what = str(err).removeprefix("Error while deserializing header: ")
    return DamagedFile(path, f"not a whole safetensors file: {what}", fix)
