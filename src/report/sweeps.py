"""Summaries of many runs: the jobs of a sweep, or every run under a folder such as outputs/.

    python -m src.report.sweeps multirun/2026-11-23/10-04-55      # rebuild one sweep's summary
    python -m src.report.sweeps outputs                          # or one over every single run

Each writes, into the folder it is given: summary.csv (one row per run, in job order),
summary.md (the same, best validation accuracy first) and val_curves.png. During a sweep, Hydra
calls ``SweepSummary`` after every job, so the summary is there even if a job fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode

from src.contract import SUMMARY, RunPaths
from src.fileio import atomic_write
from src.report.plots import plot_validation_curves
from src.runs.catalogue import Run, find_runs, hydra_overrides

log = logging.getLogger(__name__)

COLUMNS = [
    "job",
    "overrides",
    "status",
    "best_val_acc",
    "test_acc",
    "epochs",
    "train_seconds",
    "params",
    "error",
]


def trials_at_once(launcher_jobs: int | None) -> int:
    """How many jobs the launcher runs side by side (joblib's -1: one per core), which is how
    many trials the Optuna sweeper should hand it at a time."""
    if launcher_jobs in (None, 1):
        return 1
    from joblib import effective_n_jobs  # comes with the joblib launcher

    return max(1, effective_n_jobs(int(launcher_jobs)))


def job_overrides(run: Run) -> list[str]:
    """What Hydra was told for this job (kept even when the job failed before training)."""
    overrides = hydra_overrides(run.path)
    return overrides if overrides is not None else list(run.summary.get("overrides", []))


def collect(folder: Path) -> pd.DataFrame:
    """One row per run under ``folder``, in job order (0, 1, 2, ..., or by path)."""
    rows = []
    for run in find_runs([folder]):
        s = run.summary
        rows.append(
            {
                "job": str(run.path.relative_to(folder)),
                "overrides": " ".join(job_overrides(run)),
                "status": run.status,
                "best_val_acc": s.get("best_val_acc"),
                "test_acc": s.get("test_acc"),
                "epochs": s.get("epochs_completed", 0),
                "train_seconds": s.get("train_seconds"),
                "params": s.get("num_params"),
                "error": s.get("error", ""),
            }
        )
    rows.sort(key=lambda row: _natural_order(row["job"]))
    return pd.DataFrame(rows, columns=COLUMNS).astype({"params": "Int64", "epochs": "Int64"})


def _natural_order(job: str) -> list[tuple[int, int, str]]:
    """Job 2 before job 10: numeric parts compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in Path(job).parts]


def ranked_markdown(table: pd.DataFrame, title: str) -> str:
    """The table as Markdown, best validation accuracy first, failures last with their error."""
    ranked = table.sort_values("best_val_acc", ascending=False, na_position="last")
    lines = [
        f"# {title}",
        "",
        f"{len(table)} runs: "
        + ", ".join(
            f"{count} {status}" for status, count in table["status"].value_counts().items()
        ),
        "",
        "| rank | job | overrides | status | best val acc | test acc | epochs | train s | params |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rank, row in enumerate(ranked.itertuples(), start=1):
        status = row.status if not row.error else f"{row.status}: {row.error}"
        lines.append(
            f"| {rank} | {row.job} | `{row.overrides or '-'}` | {status} | "
            f"{_pct(row.best_val_acc)} | {_pct(row.test_acc)} | {row.epochs} | "
            f"{_num(row.train_seconds, '.1f')} | {_num(row.params, ',.0f')} |"
        )
    return "\n".join(lines) + "\n"


def _pct(value: Any) -> str:
    return "-" if pd.isna(value) else f"{value:.2%}"


def _num(value: Any, fmt: str) -> str:
    return "-" if pd.isna(value) else format(value, fmt)


def write_summary(folder: str | Path) -> list[Path]:
    """summary.csv, summary.md and val_curves.png for the runs under ``folder``."""
    folder = Path(folder)
    table = collect(folder)
    csv, md, png = folder / "summary.csv", folder / "summary.md", folder / "val_curves.png"
    atomic_write(csv, lambda tmp: table.to_csv(tmp, index=False))
    atomic_write(md, lambda tmp: tmp.write_text(ranked_markdown(table, f"Runs under {folder}")))
    # Label each curve by what sets it apart: the overrides that not every run shares.
    override_sets = [set(o.split()) for o in table["overrides"]]
    shared = set.intersection(*override_sets) if override_sets else set()
    curves = {}
    for job, overrides in zip(table["job"], table["overrides"]):
        metrics = RunPaths(folder / job).metrics
        if metrics.is_file():
            own = " ".join(o for o in overrides.split() if o not in shared)
            curves[f"{job}: {own or 'defaults'}"] = pd.read_csv(metrics)
    title = f"Validation accuracy, {len(curves)} of {len(table)} runs"
    if shared:
        title += f"\n(all with {' '.join(sorted(shared))})"
    fig = plot_validation_curves(curves, title)
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    return [csv, md, png]


class SweepSummary(Callback):
    """Hydra callback: refresh the sweep's summary after every job of a --multirun."""

    def on_job_end(self, config, job_return, **kwargs) -> None:
        hydra = HydraConfig.get()
        if hydra.mode == RunMode.MULTIRUN:
            write_summary(hydra.sweep.dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "folders", nargs="+", help="a sweep folder (multirun/DATE/TIME) or outputs/"
    )
    args = parser.parse_args(argv)
    status = 0
    for folder in args.folders:
        if not Path(folder).is_dir() or not any(Path(folder).rglob(SUMMARY)):
            print(f"error: {folder} holds no runs (no summary.json under it).", file=sys.stderr)
            status = 1
            continue
        for path in write_summary(folder):
            print(path)
    return status


if __name__ == "__main__":
    sys.exit(main())
