"""A job started again in its own folder continues the run there instead of starting over.

Three things start a job again:

- A cluster stops a sweep job before its time limit (submitit's signal) or preempts it; the job
  stops at a step boundary with status ``interrupted`` and its last complete epoch in
  checkpoints/last.pt, and the scheduler starts the same job again (docs:
  guide/clusters.md#time-limits-and-preemption). Hydra gives it the same folder, so it finds there
  what it left: it continues only when that folder's summary says the run did not end
  (``UNFINISHED``), a checkpoint is there and the job's command-line overrides are the run's own.
- The same ``--multirun`` command is run again with the sweep's folder (src/runs/sweep.py): each
  job finds the folder of its number. A completed run there with the job's overrides is kept and
  its result returned, without training (``completed_run``); an unfinished one (interrupted,
  killed while running, or failed after a checkpoint) continues from its checkpoint like a
  requeued job; a folder without a checkpoint starts over.
- torchrun starts every worker of a job again when one of them dies (``--max-restarts=N``; docs:
  guide/distributed.md#elastic-restarts). The workers name the same folder
  (``distributed.shared_now``) and continue from its checkpoint, whatever its status says: the
  worker that died wrote nothing, and the others were stopped by torchrun. Before the first
  checkpoint there is nothing to continue, and the run starts over in the same folder.
"""

from __future__ import annotations

from pathlib import Path

from src import distributed
from src.contract import RunPaths, Status, read_summary

# A run in these states stopped before its end; with a checkpoint, it continues from there. A
# "running" one in a folder this job has to itself died without a word (kill -9, a lost machine).
UNFINISHED = (Status.INTERRUPTED, Status.RUNNING, Status.FAILED)


def continues_interrupted_run(run_dir: str | Path, overrides: list[str]) -> bool:
    """A sweep job started again (requeued by its cluster, or its sweep continued), finding its
    unfinished run and that run's checkpoint."""
    summary = read_summary(run_dir)
    return (
        summary.get("status") in UNFINISHED
        and RunPaths(run_dir).last_checkpoint.is_file()
        and _same_job(summary, overrides)
    )


def completed_run(run_dir: str | Path, overrides: list[str]) -> dict | None:
    """The summary of the completed run of a sweep job continued in its folder, with the job's
    own overrides; None when there is none (the job runs)."""
    summary = read_summary(run_dir)
    return (
        summary
        if summary.get("status") == Status.COMPLETED and _same_job(summary, overrides)
        else None
    )


def _same_job(summary: dict, overrides: list[str]) -> bool:
    """The run in the folder was started with the job's own command-line overrides."""
    return list(summary.get("overrides", [])) == list(overrides)


def continues_restarted_run(run_dir: str | Path) -> bool:
    """A torchrun worker started again, finding the checkpoint its job wrote before."""
    return distributed.restart_count() > 0 and RunPaths(run_dir).last_checkpoint.is_file()
