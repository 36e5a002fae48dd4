"""What the SLURM launcher adds to hydra-submitit-launcher's (a leading underscore: Hydra's plugin
scan skips this module, which imports submitit):

- Requests that fit: ``gpus_per_node``, ``cpus_per_task`` and ``mem_gb`` left null are chosen for
  the run and the partition (sinfo): no GPU for a ``trainer.device=cpu`` run or a partition
  without GPUs, one otherwise; the run's data workers (up to 8) in CPUs and up to 32 GB, as much
  as a node of the partition has.
- sbatch's refusal in one sentence naming the ``hydra.launcher.*`` setting, not a traceback.
- A job that pends for a reason the cluster will not resolve by itself (Reason=PartitionConfig,
  ...) is named with the fix, and the sweep's jobs are cancelled, instead of a silent wait.
- The jobs are watched with squeue, not sacct: a cluster without accounting gives no
  "Bypassing sacct error" warning at every poll, and a cancelled job is seen to have ended.
- A job that ended without a result (scancel, a node failure, the time limit for good) fails
  alone: its run folder's summary.json and the sweep summary say how, the other jobs go on.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import CompactHydraException
from omegaconf import OmegaConf, open_dict
from submitit.core.utils import FailedJobError
from submitit.slurm import slurm as submitit_slurm

from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from src.contract import RunPaths, Status
from src.fileio import write_json
from src.report.sweeps import write_summary

log = logging.getLogger(__name__)

POLL_S = 5  # seconds between squeue calls
# Final states in which SLURM, not the run, ended the job
ENDED_BY_SLURM = {
    "CANCELLED",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "TIMEOUT",
    "DEADLINE",
    "ENDED",
}
RUNNING_STATES = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "SUSPENDED"}
# Pending reasons that last until the request or the cluster changes: what to set.
NEVER_STARTS = {
    "PartitionConfig": "it asks for more than the partition allows (CPUs, memory, GPUs or time); "
    "set hydra.launcher.cpus_per_task, mem_gb, gpus_per_node (null fits them to the node) or "
    "timeout_min lower, or choose another hydra.launcher.partition",
    "PartitionTimeLimit": "its time limit is above the partition's; "
    "set hydra.launcher.timeout_min lower",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows; "
    "set hydra.launcher.nodes lower",
    "BadConstraints": "no node has what it asks for; check hydra.launcher.constraint and gres",
    "InvalidAccount": "its account is not valid here; set hydra.launcher.account",
    "InvalidQOS": "its QOS is not valid here; set hydra.launcher.qos",
}
# sbatch's refusals: a word of the message -> the setting that fixes it
REFUSALS = [
    (
        "gres",
        "set hydra.launcher.gpus_per_node=0 to run without GPUs (or name them with "
        "hydra.launcher.gres=gpu:TYPE:N)",
    ),
    ("partition", "name one that `sinfo` lists with hydra.launcher.partition=NAME"),
    ("memory", "set hydra.launcher.mem_gb lower (or null to fit)"),
    ("cpu", "set hydra.launcher.cpus_per_task lower (or null to fit)"),
    ("node configuration", "ask for less: hydra.launcher.cpus_per_task, mem_gb, gpus_per_node"),
    ("time limit", "set hydra.launcher.timeout_min lower"),
    ("account", "set hydra.launcher.account=NAME"),
    ("qos", "set hydra.launcher.qos=NAME"),
]


class ClusterRefused(CompactHydraException):
    """Shown by Hydra as its message alone."""


class JobEnded(Exception):
    """A job that ended without a result: its JobReturn's error."""


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], first: int) -> list[JobReturn]:
    """hydra-submitit-launcher's launch, with the checks above."""
    import submitit

    submitit_slurm.SlurmJob.watcher = SqueueWatcher(delay_s=POLL_S)
    params = fit(dict(launcher.params), launcher.config)
    executor = submitit.AutoExecutor(
        cluster="slurm",
        folder=params.pop("submitit_folder"),
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
    sweep = Path(str(launcher.config.hydra.sweep.dir))
    sweep.mkdir(parents=True, exist_ok=True)
    log.info("SLURM sweep in %s", sweep)
    arguments = []
    for number, overrides in enumerate(job_overrides, start=first):
        log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
        arguments.append(
            (
                list(overrides),
                "hydra.sweep.dir",
                number,
                f"job_id_for_{number}",
                Singleton.get_state(),
            )
        )
    try:
        jobs = executor.map_array(launcher, *zip(*arguments))
    except FailedJobError as err:
        raise ClusterRefused(refusal(str(err))) from None
    wait(jobs)
    return [
        result(launcher, job, overrides, number)
        for number, (job, overrides) in enumerate(zip(jobs, job_overrides), start=first)
    ]


def fit(params: dict, config: Any) -> dict:
    """The request, with null GPUs, CPUs and memory chosen for the run and the partition."""
    node = partition_node(params.get("partition"))
    device = str(OmegaConf.select(config, "trainer.device", default="auto"))
    if params.get("gpus_per_node") is None and not params.get("gres"):
        no_gpus = device == "cpu" or (node is not None and node["gpus"] == 0)
        params["gpus_per_node"] = 0 if no_gpus else 1
    if params.get("cpus_per_task") is None:
        workers = OmegaConf.select(config, "trainer.num_workers", default="auto")
        want = workers + 1 if isinstance(workers, int) and workers > 0 else 8
        params["cpus_per_task"] = min(want, node["cpus"]) if node else want
    if params.get("mem_gb") is None:
        params["mem_gb"] = min(32, node["mem_gb"]) if node else 32
    return params


def partition_node(partition: str | None) -> dict | None:
    """The largest node of the partition (the default one when None), as sinfo sees it, or
    None where sinfo does not answer."""
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%P|%c|%m|%G"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    nodes = []
    for line in out.splitlines():
        name, cpus, memory, gres = line.split("|")
        if (name.rstrip("*") == partition) if partition else name.endswith("*"):
            gpus = sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))
            mem_gb = max(1, int(re.sub(r"\D", "", memory) or 0) // 1024)
            nodes.append(
                {"cpus": int(re.sub(r"\D", "", cpus) or 1), "mem_gb": mem_gb, "gpus": gpus}
            )
    if not nodes:
        return None
    return max(nodes, key=lambda n: (n["gpus"], n["cpus"], n["mem_gb"]))


def refusal(error: str) -> str:
    """sbatch's error in one sentence, with the setting that fixes it."""
    lines = [line.split("error:", 1)[1].strip() for line in error.splitlines() if "error:" in line]
    reason = lines[-1] if lines else error.strip().splitlines()[-1]
    fix = next((f for word, f in REFUSALS if word in reason.lower()), "see docs/guide/clusters.md")
    return f"sbatch refused the sweep's jobs ({reason}): {fix}."


def wait(jobs: list) -> None:
    """Until every job has ended; a job that cannot start stops the sweep (its jobs cancelled)."""
    while not all(job.done() for job in jobs):
        for job in jobs:
            info = job.watcher.get_info(job.job_id, mode="cache")
            reason = info.get("Reason", "")
            if info.get("State") == "PENDING" and reason in NEVER_STARTS:
                ids = sorted({j.job_id.split("_")[0] for j in jobs})
                subprocess.run(["scancel", *ids], capture_output=True, timeout=30)
                raise ClusterRefused(
                    f"SLURM job {job.job_id} cannot start (Reason={reason}): "
                    f"{NEVER_STARTS[reason]}; the sweep's jobs were cancelled."
                )
        time.sleep(1)


def result(launcher: Any, job: Any, overrides: Sequence[str], number: int) -> JobReturn:
    """The job's JobReturn. A job that SLURM ended (scancel, a node failure, a time limit with
    no requeue left) fails: its run folder and the sweep summary say how, with the run's own
    words; one that left no result gets a failed JobReturn saying so."""
    state = job.watcher.get_info(job.job_id, mode="cache").get("State", "without a result")
    try:
        ret = job.results()[0]
    except Exception:
        ret = None
    if ret is not None and state not in ENDED_BY_SLURM:
        return ret
    message = f"SLURM job {job.job_id} ended {state}"
    mark_failed(launcher, overrides, number, message)
    if ret is not None:
        return ret
    return JobReturn(
        overrides=list(overrides), status=JobStatus.FAILED, _return_value=JobEnded(message)
    )


def mark_failed(launcher: Any, overrides: Sequence[str], number: int, message: str) -> None:
    """The run folder of a job that ended says failed with ``message``; the sweep summary too."""
    config = launcher.hydra_context.config_loader.load_sweep_config(
        launcher.config, list(overrides)
    )
    with open_dict(config.hydra.job):
        config.hydra.job.num = number
    sweep = Path(config.hydra.sweep.dir)
    paths = RunPaths(sweep / str(config.hydra.sweep.subdir))
    try:
        summary = json.loads(paths.summary.read_text())
    except (OSError, ValueError):
        summary = {}
    if summary.get("status") != Status.COMPLETED:
        if summary.get("error"):  # the run's own words: where it stopped, how to resume it
            message = f"{message}: {summary['error']}"
        paths.summary.parent.mkdir(parents=True, exist_ok=True)
        write_json(paths.summary, {**summary, "status": Status.FAILED, "error": message})
        write_summary(sweep)
    log.warning("job %d: %s", number, message)


class SqueueWatcher(submitit_slurm.SlurmInfoWatcher):
    """submitit's job watcher, reading squeue instead of sacct (which fails on a cluster without
    accounting, with a warning at every poll). A job squeue no longer lists has ended."""

    def _make_command(self) -> list[str] | None:
        ids = sorted({x.split("_")[0] for x in self._registered - self._finished})
        if not ids:
            return None
        return ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%r", "-j", ",".join(ids)]

    def update(self) -> None:
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            return
        seen = {}
        for line in out.splitlines():
            job, state, reason = (line.split("|", 2) + ["", ""])[:3]
            seen[job] = {"State": state.split()[0] if state else "UNKNOWN", "Reason": reason}
        for job in self._registered - self._finished:
            if job not in seen and job in self._info_dict:  # listed before: it has ended
                last = self._info_dict[job]
                ended = last["State"] not in RUNNING_STATES
                seen[job] = last if ended else {**last, "State": "ENDED"}
        self._info_dict.update(seen)
        self._last_status_check = time.time()
        for job in self._registered - self._finished:
            if self.is_done(job, mode="cache"):
                self._finished.add(job)
