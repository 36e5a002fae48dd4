"""One run, from its settings to its report: the entry point that train.py (and the tests) call.

``train(cfg, run_dir)`` checks the settings, opens the run folder, builds (src/training/setup.py),
fits and tests (src/training/fit.py), and records how the run ended in summary.json.
``run_job(cfg)`` is the same inside a Hydra job: it resumes or continues the run a job was started
for, and turns a mistake or a stop into one sentence.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src import distributed, tracking
from src.contract import RunPaths, Status
from src.errors import ConfigError, OutOfDiskSpace, RunFailure
from src.fileio import out_of_space, write_json
from src.runs import lock
from src.runs.catalogue import hydra_overrides
from src.runs.folder import RunFolder
from src.runs.resume import load_checkpoint, trained_all_epochs
from src.tracking import Tracker
from src.training import job, trials
from src.training.checks import check_config
from src.training.fit import fit, test_and_report
from src.training.setup import build, describe
from src.training.stopping import StopRequest, TrainingStopped, disk_full_message

log = logging.getLogger("train")

# configs/hydra/launcher/submitit_*.yaml give the submitit plugin's launchers this project's
# defaults under the plugin's own names, which Hydra validates against the plugin's schemas (as
# wanted) with a deprecation warning each time; that warning alone is left out.
warnings.filterwarnings(
    "ignore", message=r"\s*'hydra/launcher/submitit_\w+' is validated against ConfigStore schema"
)


class UserError(CompactHydraException):
    """Shown by Hydra as its message alone, without a traceback."""


class OneSentence(Callback):
    """Hydra callback: a single run that ended on a UserError (a setting, a failure or a stop
    that the user asked for) says its sentence alone on stderr and exits with status 1, without
    Hydra's "Error executing job with overrides" and HYDRA_FULL_ERROR lines around it
    (HYDRA_FULL_ERROR=1 still shows the traceback). A sweep's jobs keep Hydra's lines, which name
    the job that failed. Listed first in hydra.callbacks: Hydra ends a run's callbacks in reverse
    order, so this one comes after the others (the run folder's lock given back)."""

    def on_run_end(self, config: Any, job_return: JobReturn | None = None, **kwargs: Any) -> None:
        if job_return is None or job_return.status != JobStatus.FAILED:
            return
        error = job_return._return_value  # what Hydra raises next, with its lines around it
        if isinstance(error, UserError) and os.environ.get("HYDRA_FULL_ERROR") != "1":
            print(error, file=sys.stderr, flush=True)
            raise SystemExit(1)


def run_job(cfg: DictConfig) -> float:
    """The run of a Hydra job (train.py): a new one, or the run it resumes (``resume=``) or
    continues (a requeued sweep job, torchrun's restarted workers), in Hydra's run folder; a
    continued sweep's job that completed before returns its result without training."""
    if not distributed.is_main():
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 speaks for the run
    try:
        if cfg.resume:
            cfg = job.resumed_config(cfg)
        elif (kept := job.completed_before()) is not None:  # a continued sweep's finished job
            return kept
        elif job.started_again():  # requeued by a cluster or restarted by torchrun: continue
            cfg.resume = HydraConfig.get().runtime.output_dir
        result = train(cfg, HydraConfig.get().runtime.output_dir)
    except (ConfigError, RunFailure, TrainingStopped) as err:
        if isinstance(err, TrainingStopped) and err.stop is not None:
            err.stop.hand_on()  # submitit's signal: now that the run says interrupted, requeue it
        raise UserError(str(err)) from None
    finally:  # leaves the process group; waits for the other ranks only when the run went well,
        distributed.shutdown(together=sys.exc_info()[0] is None)  # as a rank may have died
    return result


def train(cfg: DictConfig, run_dir: str | Path) -> float:
    """Run one training job into ``run_dir`` (or resume it there); returns the best validation
    accuracy. The folder is locked meanwhile: one process per run folder (src/runs/lock.py)."""
    with lock.holding(run_dir):
        return _train(cfg, Path(run_dir))


def _train(cfg: DictConfig, run_dir: Path) -> float:
    trial, tracker, checkpoint = _checked_start(cfg, run_dir)
    run = _open_run_folder(cfg, run_dir, tracker, checkpoint)
    try:
        with StopRequest() as stop:
            training = build(cfg, run, checkpoint)
            describe(cfg, run, training, resuming=checkpoint is not None)
            fit(cfg, run, training, stop, trial)
            test_and_report(cfg, run, training)
            return training.state.best["val_acc"]
    except (TrainingStopped, KeyboardInterrupt):
        run.update_summary(status=Status.INTERRUPTED)
        raise
    except BaseException as err:  # failed (a full disk: one sentence), or pruned by a study
        if out_of_space(err):  # every file written before is whole (atomic writes)
            message = disk_full_message(run)
            with contextlib.suppress(Exception):  # the full disk may refuse this too
                run.update_summary(status=Status.FAILED, error=message)
            raise OutOfDiskSpace(message) from None
        status = Status.PRUNED if trials.pruned(err) else Status.FAILED
        run.update_summary(status=status, error=str(err) or type(err).__name__)
        raise
    finally:
        _close(run)


def _checked_start(
    cfg: DictConfig, run_dir: Path
) -> tuple[trials.TrialReport | None, Tracker, dict | None]:
    """Settings first: a bad one stops the run before any data is read, and a new run's folder
    says so (a resumed run's folder is left as it was)."""
    try:
        check_config(cfg)
        trial = trials.from_hydra()  # an Optuna trial of a stored study: reports every epoch
        tracker = tracking.from_config(cfg, run_dir)  # cfg.logger; a missing package stops here
        checkpoint = load_checkpoint(run_dir) if cfg.resume else None
        if checkpoint is not None and trained_all_epochs(run_dir, checkpoint, cfg.trainer.epochs):
            raise ConfigError(
                f"resume={run_dir}: the run has already trained {checkpoint['epoch']} epochs; "
                f"pass trainer.epochs=N with N above {checkpoint['epoch']} to train it longer."
            )
    except ConfigError as err:
        if not cfg.resume and distributed.is_main():
            write_json(RunPaths(run_dir).summary, {"status": Status.FAILED, "error": str(err)})
        raise
    return trial, tracker, checkpoint


def _open_run_folder(
    cfg: DictConfig, run_dir: Path, tracker: Tracker, checkpoint: dict | None
) -> RunFolder:
    """The run folder, its summary saying ``running``: since when, or from which epoch on (0 for a
    resumed run that had not finished an epoch: it starts again, its train.log kept)."""
    resumed_from = checkpoint["epoch"] if checkpoint else 0 if cfg.resume else None
    run = RunFolder(
        run_dir, resume_epoch=resumed_from, writes=distributed.is_main(), tracker=tracker
    )
    now = datetime.now().isoformat(timespec="seconds")
    if resumed_from is None:
        run.update_summary(
            status=Status.RUNNING,
            started_at=now,
            dataset=cfg.dataset.name,
            model=cfg.model.name,
            overrides=job.overrides(),
        )
    else:
        resumes = run.summary.get("resumes", [])
        resumes.append({"at": now, "from_epoch": resumed_from, "overrides": job.overrides()})
        run.summary.pop("error", None)  # of the stop before, if that was a failure
        if checkpoint is None:  # (a run refused before it began has no record of its start yet)
            log.info("%s had not finished an epoch: starting it again from epoch 0", run_dir)
            first = {"started_at": now, "dataset": cfg.dataset.name, "model": cfg.model.name}
            run.summary = {**first, "overrides": hydra_overrides(run_dir) or [], **run.summary}
        run.update_summary(status=Status.RUNNING, resumes=resumes)
    if distributed.restart_count():  # torchrun started the workers again after one died
        restarts = run.summary.get("restarts", [])
        restarts.append(
            {
                "at": now,
                "restart": distributed.restart_count(),
                "from_epoch": checkpoint["epoch"] if checkpoint else 0,
            }
        )
        run.update_summary(restarts=restarts)
    return run


def _close(run: RunFolder) -> None:
    """TensorBoard's writer and the loggers' runs; a full disk here costs only their last words."""
    try:
        run.close()
    except Exception as err:
        if not out_of_space(err):
            raise
        log.warning(
            "the disk holding %s is full: the last TensorBoard events or logger "
            "updates could not be written",
            run.path,
        )
