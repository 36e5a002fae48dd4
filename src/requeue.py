"""A sweep job started again in its own folder continues the run there instead of starting over.

A cluster stops a job before its time limit (submitit's signal) or preempts it; the job stops at a
step boundary with status ``interrupted`` and its last complete epoch in checkpoints/last.pt, and
the scheduler starts the same job again (README, "Sweeps on a SLURM cluster"). Hydra gives it the
same folder, so it finds there what it left: it continues only when that folder's summary says
``interrupted``, a checkpoint is there and the job's command-line overrides are the run's own.
"""

from __future__ import annotations

import json
from pathlib import Path

CHECKPOINT = Path("checkpoints") / "last.pt"


def continues_interrupted_run(run_dir: str | Path, overrides: list[str]) -> bool:
    run_dir = Path(run_dir)
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return (summary.get("status") == "interrupted" and (run_dir / CHECKPOINT).is_file()
            and list(summary.get("overrides", [])) == list(overrides))
