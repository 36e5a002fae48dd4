"""Resuming a run in its own folder: its config, what may change, its checkpoint (loaded safely).

    python train.py resume=outputs/2026-11-23/10-04-55                  # carry on where it stopped
    python train.py resume=outputs/2026-11-23/10-04-55 trainer.epochs=200   # and train for longer

The resumed config is the run's own command-line overrides with the new ones on top, so the run
keeps its model, data and hyperparameters; only the settings in ``CHANGEABLE_ON_RESUME`` may differ.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from src.contract import RunPaths, Status, read_summary
from src.errors import ConfigError, last_line, refusal_reason
from src.runs.catalogue import hydra_overrides

# Settings that do not change what is being trained, only how long, where or how fast.
CHANGEABLE_ON_RESUME = {
    "resume",
    "trainer.epochs",
    "trainer.progress",
    "trainer.num_workers",
    "trainer.eval_batch_size",
    "trainer.device",
    "trainer.precision",
    "trainer.compile",
    "trainer.compile_mode",
    "trainer.visualize",
    "dataset.root",
    "dataset.cache_dir",
    "dataset.download",
    "dataset.num_workers",
}
CHANGEABLE_GROUPS = ("logger",)  # which loggers get a copy of the run (docs: guide/tracking.md)


def saved_overrides(run_dir: Path) -> list[str]:
    if not Path(run_dir).is_dir():
        raise ConfigError(
            f"resume={run_dir}: no such folder; give the folder of the run to resume, e.g. "
            "resume=outputs/2026-11-23/10-04-55 (python inference.py --list lists them)."
        )
    overrides = hydra_overrides(run_dir)
    if overrides is None:
        raise ConfigError(
            f"resume={run_dir} is not a run folder made by train.py "
            "(it has no .hydra/overrides.yaml); "
            "give the folder of the run to resume, e.g. resume=outputs/2026-11-23/10-04-55."
        )
    return overrides


def merge_overrides(saved: list[str], new: list[str]) -> list[str]:
    """The run's overrides, with any that the new ones set again replaced by the new value."""
    new_keys = {_override_key(o) for o in new}
    return [o for o in saved if _override_key(o) not in new_keys] + new


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


NAMES = ("dataset.name", "model.name")


def check_resumable(saved: DictConfig, resumed: DictConfig, run_dir: Path) -> None:
    """Refuses a resume whose settings would change what is being trained."""
    before, after = _flatten(saved), _flatten(resumed)
    # Another dataset or model is said as such, not as the first setting it happens to change.
    names_first = sorted(set(before) | set(after), key=lambda key: (key not in NAMES, key))
    for key in names_first:
        if (
            key in CHANGEABLE_ON_RESUME
            or key.split(".")[0] in CHANGEABLE_GROUPS
            or before.get(key) == after.get(key)
        ):
            continue
        raise ConfigError(
            f"resume={run_dir}: {key} was {before.get(key)} in that run and would be "
            f"{after.get(key)} now, which a resumed run cannot change (only "
            f"{', '.join(sorted(CHANGEABLE_ON_RESUME - {'resume'}))} and logger.* can); start a "
            "new run instead."
        )


def _flatten(cfg: DictConfig) -> dict[str, Any]:
    return dotted_keys(OmegaConf.to_container(cfg, resolve=True))


def load_checkpoint(run_dir: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """checkpoints/last.pt, read with ``weights_only=True``: tensors and plain data, never code."""
    path = RunPaths(run_dir).last_checkpoint
    if not path.is_file():
        raise ConfigError(
            f"resume={run_dir}: there is no {path.relative_to(run_dir)} to resume from (the run "
            "stopped before its first epoch ended); start it again instead."
        )
    damaged = f"{path} is damaged or not a checkpoint"
    if not zipfile.is_zipfile(path):  # torch.save's archive; anything else is not train.py's
        raise ConfigError(
            f"{damaged} (not the zip archive torch.save writes); resume needs the "
            "last.pt that train.py wrote."
        )
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ConfigError(
            f"{path} holds pickled objects other than tensors and plain data, so it was refused "
            f"unread (torch.load weights_only=True: {refusal_reason(err)}); only resume "
            "checkpoints that train.py wrote."
        ) from None
    except (RuntimeError, OSError, EOFError, KeyError, ValueError) as err:
        raise ConfigError(f"{damaged} ({last_line(err)}).") from None


def trained_all_epochs(run_dir: Path, checkpoint: dict, epochs: int) -> bool:
    """Nothing left to do: the checkpoint is past ``epochs``, or at it and the run completed (a
    run stopped while testing its last epoch's weights still has its test to run)."""
    if checkpoint["epoch"] != epochs:
        return checkpoint["epoch"] > epochs
    summary = RunPaths(run_dir).summary
    return not summary.is_file() or read_summary(run_dir).get("status") == Status.COMPLETED


def dotted_keys(config: dict, prefix: str = "") -> dict[str, Any]:
    """{"trainer": {"epochs": 80}} -> {"trainer.epochs": 80} (an empty block gives no key)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(dotted_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
