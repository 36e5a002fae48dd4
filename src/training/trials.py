"""A sweep job that is a trial of a stored Optuna study reports its validation accuracy to it.

The study's sweeper (hydra_plugins/optuna_study_sweeper) tells each job its trial number; after
every epoch the job reports its best validation accuracy so far, and the study's pruner may
answer that the trial is hopeless: ``report`` then raises ``optuna.TrialPruned``, train.py writes
status ``pruned`` and the sweeper tells the study PRUNED. Optuna is imported only for such a job.
"""

from __future__ import annotations

import os
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate

TRIAL_ENV = "OPTUNA_TRIAL_NUMBER"  # set by the sweeper through hydra.job.env_set


class TrialReport:
    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def report(self, epoch: int, best_val_acc: float) -> None:
        import optuna

        self.trial.report(best_val_acc, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned by the study's {type(self.trial.study.pruner).__name__} after epoch "
                f"{epoch}, at best validation accuracy {best_val_acc:.4f}"
            )


def from_hydra() -> TrialReport | None:
    """This job's trial, when it is one of a stored study with a pruner (one process only)."""
    if not HydraConfig.initialized() or os.environ.get("WORLD_SIZE", "1") != "1":
        return None
    hydra = HydraConfig.get()
    number = hydra.job.env_set.get(TRIAL_ENV)
    sweeper = hydra.sweeper
    if (
        hydra.mode != RunMode.MULTIRUN
        or number is None
        or not sweeper.get("storage")
        or not sweeper.get("pruner")
    ):
        return None
    import optuna

    study = optuna.load_study(
        study_name=sweeper.study_name, storage=sweeper.storage, pruner=instantiate(sweeper.pruner)
    )
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(number))
    return TrialReport(optuna.trial.Trial(study, trial_id))


def pruned(err: BaseException) -> bool:
    """Whether ``err`` is Optuna's answer that the trial is hopeless."""
    return type(err).__name__ == "TrialPruned" and type(err).__module__.startswith("optuna")
