"""Resuming a run in its own folder: its config, what may change, its checkpoint (loaded safely).

    python train.py resume=outputs/2026-11-23/10-04-55                  # carry on where it stopped
    python train.py resume=outputs/2026-11-23/10-04-55 trainer.epochs=200   # and train for longer

The resumed config is the run's own command-line overrides with the new ones on top, so the run
keeps its model, data and hyperparameters; only the settings in ``CHANGEABLE_ON_RESUME`` may differ.

A run that stopped before its first checkpoint (a full disk, a stop, an error in its data) has
nothing to resume: resuming it starts it again from epoch 0 in its folder, with its saved settings
(``nothing_to_resume``). The files a resume reads (checkpoints/last.pt, the best
weights it tests at its end, summary.json, metrics.csv) are read before anything is written, and a
damaged one stops it with DamagedFile's sentence.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from src.contract import OR_NEW_RUN, RunPaths, Status, read_summary
from src.errors import ConfigError, DamagedFile, last_line, refusal_reason
from src.fileio import check_safetensors
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
# A value that calls a resolver, which reads this machine (its environment, its clock):
RESOLVER_CALL = re.compile(r"\$\{.*:")  # ${oc.env:X}, ${oc.${a}:X}: not a plain ${key}


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


def nothing_to_resume(run_dir: Path) -> bool:
    """The run stopped before its first checkpoint was written: no checkpoints/last.pt, and in
    metrics.csv at most the first epoch's row (logged, like its weights, just before the
    checkpoint that never came). It starts again from epoch 0 in its folder, where nothing is lost
    but that first epoch, which it trains again."""
    paths = RunPaths(run_dir)
    if paths.last_checkpoint.exists():
        return False
    try:
        lines = paths.metrics.read_bytes().splitlines() if paths.metrics.exists() else []
    except OSError:
        return False
    return len([line for line in lines if line.strip()]) <= 2  # a header and epoch 1 at most


def load_checkpoint(run_dir: Path, device: torch.device | str = "cpu") -> dict[str, Any] | None:
    """checkpoints/last.pt, read with ``weights_only=True``: tensors and plain data, never code;
    None for a run with nothing to resume (it starts again from epoch 0). The best weights,
    which the resumed run tests at its end, are checked whole first."""
    paths = RunPaths(run_dir)
    path = paths.last_checkpoint
    if not path.is_file():
        if nothing_to_resume(run_dir):
            return None
        raise ConfigError(
            f"resume={run_dir}: there is no {path.relative_to(run_dir)}, though metrics.csv "
            f"says the run trained several epochs; {OR_NEW_RUN}."
        )
    if paths.best_weights.is_file():
        check_safetensors(paths.best_weights, OR_NEW_RUN)
    if not zipfile.is_zipfile(path):  # torch.save's archive; anything else is not train.py's
        raise DamagedFile(path, "not the zip archive torch.save writes", OR_NEW_RUN)
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ConfigError(
            f"{path} holds pickled objects other than tensors and plain data, so it was refused "
            f"unread (torch.load weights_only=True: {refusal_reason(err)}); only resume "
            "checkpoints that train.py wrote."
        ) from None
    except (RuntimeError, OSError, EOFError, KeyError, ValueError) as err:
        raise DamagedFile(path, last_line(err), OR_NEW_RUN) from None


def trained_all_epochs(run_dir: Path, checkpoint: dict, epochs: int) -> bool:
    """Nothing left to do: the checkpoint is past ``epochs``, or at it and the run completed (a
    run stopped while testing its last epoch's weights still has its test to run)."""
    if checkpoint["epoch"] != epochs:
        return checkpoint["epoch"] > epochs
    summary = RunPaths(run_dir).summary
    return not summary.is_file() or read_summary(run_dir).get("status") == Status.COMPLETED


def dotted_keys(config: dict, prefix: str = "", keep_empty: bool = False) -> dict[str, Any]:
    """{"trainer": {"epochs": 80}} -> {"trainer.epochs": 80}; an empty block gives no key, or
    with ``keep_empty`` is a value itself ({"logger": {}} stays)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and (value or not keep_empty):
            flat.update(dotted_keys(value, f"{prefix}{key}.", keep_empty))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
