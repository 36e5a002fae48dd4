"""The Hydra job around a run: the resolvers its config uses, its command-line overrides, and
whether it resumes a run (``resume=``) or continues one it was started again for (a requeued
sweep job, torchrun's restarted workers)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src import distributed
from src.errors import ConfigError
from src.report.sweeps import trials_at_once
from src.runs.requeue import completed_run, continues_interrupted_run, continues_restarted_run
from src.runs.resume import check_resumable, merge_overrides, saved_overrides

log = logging.getLogger("train")

# A resumed run writes into its own folder, and Hydra leaves that folder's .hydra/ as it was;
# under torchrun every rank names the same dated folder, and only rank 0 writes .hydra/ there.
OmegaConf.register_new_resolver(
    "if_resuming", lambda resume, then, otherwise: then if resume else otherwise, replace=True
)
OmegaConf.register_new_resolver("shared_now", distributed.shared_now, replace=True)
# The Optuna sweeper asks for as many trials at a time as the launcher runs at once.
OmegaConf.register_new_resolver("trials_at_once", trials_at_once, replace=True)
OmegaConf.register_new_resolver(
    "hydra_subdir",
    lambda resume: None if resume or not distributed.is_main() else ".hydra",
    replace=True,
)


def share_import_path() -> None:
    """Puts the project folder on PYTHONPATH for the processes a launcher starts. A submitit job
    (SLURM or local) unpickles train.py's function in a new Python that starts in the folder you
    ran from, and finds src/ only when the project is on its path."""
    root = str(Path(__file__).resolve().parents[2])
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])


def hparams(cfg: DictConfig) -> dict[str, str | float | int | bool]:
    """The model and dataset names and every command-line override, as TensorBoard hparams."""
    values: dict[str, str | float | int | bool] = {
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
    }
    for override in overrides():
        key, _, text = override.lstrip("+~").partition("=")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        values[key] = value if isinstance(value, (str, float, int, bool)) else str(value)
    return values


def overrides() -> list[str]:
    """The command-line overrides of this job, when Hydra started it."""
    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return []


def resumed_config(cfg: DictConfig) -> DictConfig:
    """The config of the run being resumed, with this command's overrides on top (checked)."""
    run_dir = Path(cfg.resume)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ConfigError("resume= resumes one run; leave out --multirun.")
    original = saved_overrides(run_dir)
    resumed = hydra.compose("config", overrides=merge_overrides(original, overrides()))
    check_resumable(hydra.compose("config", overrides=original), resumed, run_dir)
    return resumed


def completed_before() -> float | None:
    """A continued sweep's job whose folder holds its completed run (src/runs/requeue.py): that
    run's best validation accuracy, which the job returns without training again; else None."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    run_dir = hydra_cfg.runtime.output_dir
    summary = completed_run(run_dir, overrides())
    if summary is None:
        return None
    log.info("%s holds this job's completed run: kept, not run again", run_dir)
    return float(summary.get("best_val_acc") or 0.0)


def started_again() -> bool:
    """A job started again in its own folder, which holds its run to continue (src/runs/requeue.py):
    a sweep job requeued by its cluster, or torchrun's workers restarted after one died."""
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    if hydra_cfg.mode == RunMode.MULTIRUN and continues_interrupted_run(run_dir, overrides()):
        log.info("%s holds this job's unfinished run: continuing it from its checkpoint", run_dir)
        return True
    if continues_restarted_run(run_dir):
        log.info(
            "torchrun restart %d: continuing %s from its checkpoint",
            distributed.restart_count(),
            run_dir,
        )
        return True
    return False
