"""A job started again in its own folder continues the run there instead of starting over.

Two things start a job again:

- A cluster stops a sweep job before its time limit (submitit's signal) or preempts it; the job
  stops at a step boundary with status ``interrupted`` and its last complete epoch in
  checkpoints/last.pt, and the scheduler starts the same job again (docs:
  guide/clusters.md#time-limits-and-preemption). Hydra gives it the same folder, so it finds there
  what it left: it continues only when that folder's summary says ``interrupted``, a checkpoint is
  there and the job's command-line overrides are the run's own.
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


def continues_interrupted_run(run_dir: str | Path, overrides: list[str]) -> bool:
    """A sweep job requeued by its cluster, finding its interrupted run."""
    summary = read_summary(run_dir)
    return (
        summary.get("status") == Status.INTERRUPTED
        and RunPaths(run_dir).last_checkpoint.is_file()
        and list(summary.get("overrides", [])) == list(overrides)
    )


def continues_restarted_run(run_dir: str | Path) -> bool:
    """A torchrun worker started again, finding the checkpoint its job wrote before."""
    return distributed.restart_count() > 0 and RunPaths(run_dir).last_checkpoint.is_file()
