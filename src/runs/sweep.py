"""A grid sweep continued in its folder: the command must be the sweep's own.

    python train.py --multirun seed=0,1 optimizer.lr=1e-3,5e-4 hydra.sweep.dir=multirun/lr
    # ... stopped (Ctrl-C, a lost machine) during job 2; the same command again continues it:
    python train.py --multirun seed=0,1 optimizer.lr=1e-3,5e-4 hydra.sweep.dir=multirun/lr

Hydra numbers a grid sweep's jobs by the order of its overrides and their values, and writes the
sweep's command into ``multirun.yaml`` in its folder. A command run again with that folder gives
every job its number and folder of before, and each job decides there what to do
(src/runs/requeue.py: a completed run is kept, an unfinished one resumes from its checkpoint, a
job never started runs). A command whose sweep differs (another override, other values, the same
values in another order) would give jobs the folders of other settings, so ``ContinueSweep``
refuses it, with the difference in one sentence, before Hydra writes anything there.

Hydra's basic launcher runs the jobs one after another in its own process, and would start the
next job after one stopped by Ctrl-C or SIGTERM; ``StopWithJob`` stops the sweep there instead,
with the command that continues it.

An Optuna search continues (and stops) by its study instead (hydra_plugins/optuna_study_sweeper),
and is left to it; a grid sweep and a search do not continue each other.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from src.contract import Status, read_summary
from src.errors import last_line

SAVED = "multirun.yaml"  # Hydra's copy of the sweep's config, written as the sweep starts


def grid(config: DictConfig) -> bool:
    """Hydra's basic sweeper: every combination of the overrides' values, numbered in order."""
    return str(config.hydra.sweeper.get("_target_", "")).endswith(".BasicSweeper")


def in_process(config: DictConfig) -> bool:
    """Hydra's basic launcher: the jobs one after another, in the process of the command."""
    return str(config.hydra.launcher.get("_target_", "")).endswith(".BasicLauncher")


def sweep_values(config: DictConfig) -> dict[str, list[str]]:
    """Each override of the sweep (``hydra.sweeper.params`` first, then the command line's, as
    the basic sweeper reads them) -> its values as Hydra writes them (``1e-3`` -> ``0.001``)."""
    params = _raw(config.hydra.sweeper).get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items()]
    lines += list(config.hydra.overrides.task)
    values = {}
    for override in OverridesParser.create().parse_overrides(lines):
        values[override.get_key_element()] = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
    return values


def difference(saved: DictConfig, new: DictConfig) -> str | None:
    """How the sweep of ``new`` differs from the ``saved`` one, in words; None when it is the
    same sweep, its jobs numbered alike."""
    if grid(saved) != grid(new):
        return (
            "that sweep is an Optuna search and this command a grid sweep"
            if grid(new)
            else "that sweep is a grid sweep and this command an Optuna search"
        )
    if not grid(new):
        return None  # a search continues by its study
    before, after = sweep_values(saved), sweep_values(new)
    for key, values in before.items():
        if key not in after:
            return f"that sweep has {_text(key, values)}, which this command leaves out"
        if sorted(after[key]) != sorted(values):
            return f"that sweep has {_text(key, values)} and this command {_text(key, after[key])}"
        if after[key] != values:
            return (
                f"this command gives {_text(key, after[key])} for {_text(key, values)}, the "
                "values in another order, which numbers the jobs differently"
            )
    for key, values in after.items():
        if key not in before:
            return f"this command adds {_text(key, values)}, which that sweep does not set"
    for old, new_key in zip(before, after):
        if old != new_key:
            return (
                f"this command gives {new_key} where that sweep gives {old}, the same overrides "
                "in another order, which numbers the jobs differently"
            )
    subdirs = _raw(saved.hydra.sweep)["subdir"], _raw(new.hydra.sweep)["subdir"]
    if subdirs[0] != subdirs[1]:
        return (
            f"that sweep names its jobs' folders hydra.sweep.subdir={subdirs[0]} and this "
            f"command {subdirs[1]}"
        )
    return None


def _raw(node: DictConfig) -> dict[str, Any]:
    """The node's values as written (``${hydra.job.num}``): a sweep's config has no job yet."""
    return OmegaConf.to_container(node, resolve=False)


def _text(key: str, values: list[str]) -> str:
    return f"{key}={','.join(values)}"


def refusal(folder: Path, saved: DictConfig, new: DictConfig) -> str | None:
    """The sentence that refuses ``new`` in ``folder``, or None when it continues that sweep."""
    found = difference(saved, new)
    if found is None:
        return None
    own = " ".join(str(line) for line in saved.hydra.overrides.task)
    return (
        f"hydra.sweep.dir={folder} holds another sweep: {found}, so its job folders would get "
        f"other settings; to continue that sweep, give its own overrides ({own or 'none'}); to "
        "start this one, give it a folder of its own with hydra.sweep.dir= (nothing was changed)."
    )


class ContinueSweep(Callback):
    """Hydra callback: a --multirun whose hydra.sweep.dir holds a sweep goes on only when it is
    that sweep (see the module's docstring); otherwise it stops with the difference, exit 1,
    before Hydra writes into the folder."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        if not (folder / SAVED).is_file():
            return
        try:
            saved = OmegaConf.load(folder / SAVED)
            message = refusal(folder, saved, config)
        except (OSError, ValueError, YAMLError, OmegaConfBaseException, HydraException) as err:
            message = (  # not Hydra's file, or not whole
                f"{folder / SAVED} could not be read as the saved config of a sweep "
                f"({last_line(err)}), so this command cannot tell whether it continues that "
                "sweep; give this sweep a folder of its own with hydra.sweep.dir= (nothing was "
                "changed)."
            )
        if message:  # Hydra turns a callback's exceptions into warnings: exit here
            print(message, file=sys.stderr, flush=True)
            raise SystemExit(1)


class StopWithJob(Callback):
    """Hydra callback: a grid sweep's job run by the basic launcher that was stopped by a signal
    (its run says interrupted, and its error is the stop's sentence) stops the sweep, exit 1,
    with the command that continues it; the sweep's summary is written first (``SweepSummary``
    comes after this callback in hydra.callbacks, and Hydra ends a job's callbacks in reverse)."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra = HydraConfig.get()
        if hydra.mode != RunMode.MULTIRUN or not (grid(config) and in_process(config)):
            return
        error = str(job_return._return_value) if job_return.status == JobStatus.FAILED else ""
        run_dir = hydra.runtime.output_dir
        if not error.startswith("stopped by ") or (
            read_summary(run_dir).get("status") != Status.INTERRUPTED
        ):
            return
        print(
            f"job {hydra.job.num} {error.split(';')[0]}, and the sweep with it; continue the "
            f"sweep with the same command plus hydra.sweep.dir={hydra.sweep.dir}: the completed "
            f"jobs are kept, and job {hydra.job.num} goes on where it stopped.",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1)
