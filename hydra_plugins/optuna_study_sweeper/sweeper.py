"""The sweeper Hydra finds (configs/hydra/sweeper/optuna_study.yaml names it); the loop it runs is
in _study.py.

Hydra imports every plugin module at every run, search or not. This one imports neither optuna nor
the loop, so a project installed without requirements-sweeps.txt gets no plugin warning at each
run, and a search asked for there stops with the pip command. The config sets ``_recursive_:
false``, so the sampler and pruner (optuna classes) are made here, once optuna is known to be there.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig

INSTALL = "pip install -r requirements-sweeps.txt"


class MissingOptuna(CompactHydraException):
    """Shown by Hydra as its message alone."""


class OptunaStudySweeper(Sweeper):
    def __init__(self, sampler: DictConfig, pruner: DictConfig | None, **settings: Any) -> None:
        self.sampler, self.pruner, self.settings = sampler, pruner, settings
        self.loop = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        if importlib.util.find_spec("optuna") is None:
            raise MissingOptuna(f"+hparams_search=optuna needs the optuna package: {INSTALL}")
        from hydra_plugins.optuna_study_sweeper._study import StudyLoop

        self.loop = StudyLoop(instantiate(self.sampler), instantiate(self.pruner), **self.settings)
        self.loop.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.loop.sweep(arguments)
