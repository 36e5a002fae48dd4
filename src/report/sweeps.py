"""Summaries of many runs: the jobs of a sweep, or every run under a folder such as outputs/.

    python -m src.report.sweeps multirun/2026-11-23/10-04-55      # rebuild one sweep's summary
    python -m src.report.sweeps outputs                          # or one over every single run

Each writes, into the folder it is given: summary.csv (one row per run, in job order),
summary_seeds.csv (one row per setting: the jobs that differ only in ``seed`` together, with the
mean, standard deviation, n, min and max of each final metric; src/report/seeds.py), summary.md
(the settings over seeds when some ran with several, then the runs, best validation accuracy
first) and val_curves.png (each run's curve, or each setting's mean with a min-max band).
During a sweep, Hydra calls ``SweepSummary`` after every job, so the summary is there even if a
job fails.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from matplotlib.figure import Figure

from src.contract import SUMMARY, RunPaths
from src.fileio import atomic_write
from src.report import seeds
from src.report.plots import plot_validation_curves, write_png
from src.runs.catalogue import Run, find_runs, hydra_overrides

try:
    import fcntl
except ImportError:  # Windows: no flock; there the jobs' summaries are not serialised
    fcntl = None

log = logging.getLogger(__name__)

SEEDS_CSV = "summary_seeds.csv"  # one row per setting: its jobs over seeds (src/report/seeds.py)

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


def ranked_markdown(table: pd.DataFrame, title: str, over_seeds: list[str] | None = None) -> str:
    """The table as Markdown, best validation accuracy first, failures last with their error;
    after the counts, the ``over_seeds`` section when there is one (src/report/seeds.py)."""
    ranked = table.sort_values("best_val_acc", ascending=False, na_position="last")
    lines = [
        f"# {title}",
        "",
        f"{len(table)} runs: "
        + ", ".join(
            f"{count} {status}" for status, count in table["status"].value_counts().items()
        ),
        "",
        *([*over_seeds, "", "## Jobs", ""] if over_seeds else []),
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
    """summary.csv, summary_seeds.csv, summary.md and val_curves.png for the runs under
    ``folder``."""
    folder = Path(folder)
    table = collect(folder)
    settings = seeds.over_seeds(table)
    paths = [folder / name for name in ("summary.csv", SEEDS_CSV, "summary.md", "val_curves.png")]
    csv, seeds_csv, md, png = paths
    atomic_write(csv, lambda tmp: table.to_csv(tmp, index=False))
    atomic_write(seeds_csv, lambda tmp: settings.to_csv(tmp, index=False))
    over = seeds.markdown(settings) if seeds.repeated(settings) else []
    text = ranked_markdown(table, f"Runs under {folder}", over)
    atomic_write(md, lambda tmp: tmp.write_text(text))
    fig = _curves_figure(folder, table, over_seeds=bool(over))
    write_png(fig, png)
    return paths


def _curves_figure(folder: Path, table: pd.DataFrame, over_seeds: bool) -> Figure:
    """Each job's validation curve, or, when some jobs differ only in seed, each setting's mean
    and band (src/report/seeds.py); labelled by the overrides that not every run shares."""
    override_sets = [set(o.split()) for o in table["overrides"]]
    shared = set.intersection(*override_sets) if override_sets else set()
    # (the shared overrides wrapped, so that a long command stays inside the figure)
    suffix = "\n" + textwrap.fill(f"(all with {' '.join(sorted(shared))})", 110) if shared else ""

    def own(overrides: str) -> str:
        return " ".join(o for o in overrides.split() if o not in shared) or "defaults"

    if over_seeds:
        grouped = {own(name): runs for name, runs in seeds.curves(folder, table).items()}
        count = sum(len(runs) for runs in grouped.values())
        title = (
            f"Validation accuracy over seeds, {len(grouped)} settings "
            f"({count} completed runs of {len(table)})"
        )
        return seeds.plot_over_seeds(grouped, title + suffix)
    curves = {}
    for job, overrides in zip(table["job"], table["overrides"]):
        metrics = RunPaths(folder / job).metrics
        if metrics.is_file():
            curves[f"{job}: {own(overrides)}"] = pd.read_csv(metrics)
    title = f"Validation accuracy, {len(curves)} of {len(table)} runs"
    return plot_validation_curves(curves, title + suffix)


@contextlib.contextmanager
def _one_writer_at_a_time(folder: Path):
    """Holds the OS's lock on ``folder`` itself for the block (no file is left behind)."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # the lock goes with the file descriptor


def refresh_summary(folder: str | Path) -> list[Path]:
    """``write_summary`` by one job at a time. Jobs that end together (joblib, SLURM) would
    otherwise race: the one that read the other's summary.json while it still said "running"
    could write its table last. Each job's own summary.json is final before it gets here, so the
    job that takes the lock last sees every job that ended before it."""
    with _one_writer_at_a_time(Path(folder)):
        return write_summary(folder)


class SweepSummary(Callback):
    """Hydra callback: refresh the sweep's summary after every job of a --multirun."""

    def on_job_end(self, config, job_return, **kwargs) -> None:
        hydra = HydraConfig.get()
        if hydra.mode == RunMode.MULTIRUN:
            refresh_summary(hydra.sweep.dir)


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
