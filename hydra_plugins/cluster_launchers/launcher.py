"""The launchers Hydra finds: hydra-submitit-launcher's, whose SLURM one fits each job's request
to the cluster, says a refusal or a job that cannot start in one sentence, and watches the jobs
with squeue (_slurm.py). Without requirements-sweeps.txt there is nothing to subclass, and this
module defines nothing (Hydra's plugin scan imports it at every run).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin
except ImportError:  # requirements-sweeps.txt is not installed
    plugin = None


def _quietly(call: Any, *args: Any) -> Any:
    """Runs a job (in the job's own process) without Hydra's warning that this project's
    submitit_* configs are checked against the plugin's schemas of the same names (as wanted)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/submitit_\w+' is validated")
        return call(*args)


if plugin is not None:

    class LocalLauncher(plugin.LocalLauncher):
        def __call__(self, *args: Any) -> Any:
            return _quietly(super().__call__, *args)

    class SlurmLauncher(plugin.SlurmLauncher):
        def __call__(self, *args: Any) -> Any:
            return _quietly(super().__call__, *args)

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
            from hydra_plugins.cluster_launchers import _slurm

            return _slurm.launch(self, job_overrides, initial_job_idx)
