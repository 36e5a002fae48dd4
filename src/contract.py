"""The run folder's contract: the name of every file in it, and the statuses of summary.json.

Every module that reads or writes a run folder takes its paths from ``RunPaths`` and its statuses
from ``Status``, so the layout is written down once (docs: reference/run-folder.md).
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any


class Status(str, Enum):
    """summary.json's ``status``: written, read, compared and printed as plain text (Python
    3.11's StrEnum, written out for 3.10)."""

    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"  # stopped on a signal; resume continues it
    FAILED = "failed"  # a setting, a divergence or a full disk; ``error`` says which
    PRUNED = "pruned"  # stopped early by an Optuna study

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


SUMMARY = "summary.json"  # the one file every run folder has, from its first moment
FIGURE_DPI = 120  # every PNG a run, a sweep or a comparison writes into its folder

# What to do about a damaged file, said after its name (src/fileio.py's readers raise DamagedFile).
RESTORE = "restore it from a copy of the run folder"
OR_NEW_RUN = f"{RESTORE}, or start a new run"
OR_OTHER_RUN = f"{RESTORE}, or pick another run"


class RunPaths:
    """The paths of one run folder's files."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def summary(self) -> Path:  # status, best and test metrics, timings
        return self.root / SUMMARY

    @property
    def metrics(self) -> Path:  # one row per epoch
        return self.root / "metrics.csv"

    @property
    def model_card(self) -> Path:  # model.json: what inference needs
        return self.root / "model.json"

    @property
    def best_weights(self) -> Path:  # chosen on validation; safetensors, no pickle
        return self.root / "weights" / "best.safetensors"

    @property
    def last_checkpoint(self) -> Path:  # the full training state, for resume
        return self.root / "checkpoints" / "last.pt"

    @property
    def hydra_config(self) -> Path:  # the resolved config Hydra saved
        return self.root / ".hydra" / "config.yaml"

    @property
    def hydra_overrides(self) -> Path:  # the command line's overrides Hydra saved
        return self.root / ".hydra" / "overrides.yaml"

    @property
    def lock(self) -> Path:  # held while a process trains in the folder
        return self.root / ".lock"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """summary.json as a dict; empty when the file is missing, unreadable or not an object (for
    callers that only look; those that add to it read it with src/fileio.py's read_json)."""
    try:
        summary = json.loads(RunPaths(run_dir).summary.read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}
