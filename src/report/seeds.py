"""A sweep's jobs that differ only in ``seed``, taken together: one row per setting.

    python train.py --multirun seed=0,1,2 optimizer.lr=1e-3,5e-4   # two settings, three seeds each

``over_seeds`` groups a sweep's table (src/report/sweeps.py, one row per job) by its overrides
without ``seed=`` and gives, for each setting, the mean, standard deviation (pandas' sample
standard deviation, n - 1), n, min and max of each final metric over its completed runs; a
setting with one completed run has no standard deviation. ``plot_over_seeds`` draws each
setting's mean validation accuracy per epoch, with a band from the lowest to the highest of its
runs at that epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from src.contract import RunPaths, Status
from src.report.plots import plt

METRICS = ["best_val_acc", "test_acc", "train_seconds"]  # the final numbers of each job
STATS = ["mean", "std", "n", "min", "max"]
COLUMNS = ["setting", "seeds", "jobs", "runs", *[f"{m}_{s}" for m in METRICS for s in STATS]]


def _is_seed(override: str) -> bool:
    return override.lstrip("+~").split("=", 1)[0] == "seed"


def setting(overrides: str) -> str:
    """A job's overrides without its seed: what it shares with the same job's other seeds."""
    return " ".join(o for o in overrides.split() if not _is_seed(o))


def seed(overrides: str) -> str:
    """The job's ``seed=`` value, or "" when the command left the seed as configured."""
    return next((o.split("=", 1)[1] for o in overrides.split() if _is_seed(o)), "")


def over_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """One row per setting, in the order of its first job: its seeds, its jobs, how many runs
    (n counts the completed ones, whose numbers are taken), and each metric's statistics."""
    jobs = table.assign(
        setting=table["overrides"].fillna("").map(setting),
        seed=table["overrides"].fillna("").map(seed),
        job=table["job"].astype(str),
    )
    done = jobs[jobs["status"] == Status.COMPLETED]
    stats = done.groupby("setting", sort=False)[METRICS].agg(["mean", "std", "count", "min", "max"])
    stats.columns = [f"{metric}_{'n' if s == 'count' else s}" for metric, s in stats.columns]
    listed = jobs.groupby("setting", sort=False).agg(
        seeds=("seed", lambda s: " ".join(v for v in s if v)),
        jobs=("job", " ".join),
        runs=("job", "size"),
    )
    merged = listed.join(stats).reset_index()
    for metric in METRICS:  # a setting with no completed run: none counted
        merged[f"{metric}_n"] = merged[f"{metric}_n"].fillna(0).astype(int)
    return merged.reindex(columns=COLUMNS)


def repeated(seeds: pd.DataFrame) -> bool:
    """Some setting ran more than once (over seeds), which is what this summary is for."""
    return bool((seeds["runs"] > 1).any())


def markdown(seeds: pd.DataFrame) -> list[str]:
    """The settings as Markdown lines, best mean validation accuracy first."""
    ranked = seeds.sort_values("best_val_acc_mean", ascending=False, na_position="last")
    settings = [set(name.split()) for name in seeds["setting"]]
    shared = set.intersection(*settings) if len(settings) > 1 else set()
    lines = [
        "## Over seeds",
        "",
        "Jobs that differ only in `seed`, one row each: the mean, standard deviation (n - 1), "
        "min and max over the completed runs (n of the jobs)"
        + (f"; every setting with `{' '.join(sorted(shared))}`." if shared else "."),
        "",
        "| rank | setting | seeds | n | best val acc, mean ± std | min - max "
        "| test acc, mean ± std | min - max | train s, mean |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rank, row in enumerate(ranked.to_dict("records"), start=1):
        n, runs = row["best_val_acc_n"], row["runs"]
        lines.append(
            f"| {rank} | `{_own(row['setting'], shared) or '-'}` | {row['seeds'] or '-'} | "
            f"{n if n == runs else f'{n} of {runs}'} | {_spread(row, 'best_val_acc')} | "
            f"{_span(row, 'best_val_acc')} | {_spread(row, 'test_acc')} | "
            f"{_span(row, 'test_acc')} | {_num(row['train_seconds_mean'])} |"
        )
    return lines


def _own(name: str, shared: set[str]) -> str:
    return " ".join(o for o in name.split() if o not in shared)


def _spread(row: dict[str, Any], metric: str) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if pd.isna(mean):
        return "-"
    return f"{mean:.2%}" + ("" if pd.isna(std) else f" ± {std * 100:.2f}")


def _span(row: dict[str, Any], metric: str) -> str:
    low, high = row[f"{metric}_min"], row[f"{metric}_max"]
    return "-" if pd.isna(low) else f"{low:.2%} - {high:.2%}"


def _num(value: Any) -> str:
    return "-" if pd.isna(value) else f"{value:.1f}"


def curves(folder: Path, table: pd.DataFrame) -> dict[str, list[pd.DataFrame]]:
    """Each setting's completed runs' metrics.csv, in the order of its first job."""
    grouped: dict[str, list[pd.DataFrame]] = {}
    for row in table.itertuples():
        metrics = RunPaths(folder / str(row.job)).metrics
        if row.status == Status.COMPLETED and metrics.is_file():
            grouped.setdefault(setting(row.overrides or ""), []).append(pd.read_csv(metrics))
    return grouped


def plot_over_seeds(grouped: dict[str, list[pd.DataFrame]], title: str) -> Figure:
    """Per setting (label -> its runs' metrics), the mean validation accuracy per epoch (a line)
    and the lowest to the highest of its runs (a band), labelled with its n."""
    fig, ax = plt.subplots(figsize=(10, 5))
    for index, (name, runs) in enumerate(grouped.items()):
        per_epoch = pd.concat(runs).groupby("epoch")["val_acc"].agg(["mean", "min", "max"])
        per_epoch = per_epoch.dropna() * 100  # epochs that trainer.val_every skipped have none
        color = f"C{index % 10}"
        dots = {"marker": "o", "markersize": 4} if len(per_epoch) <= 5 else {}
        ax.plot(per_epoch.index, per_epoch["mean"], color=color, **dots)
        ax.fill_between(
            per_epoch.index, per_epoch["min"], per_epoch["max"], color=color, alpha=0.2, lw=0
        )
        ax.plot([], [], color=color, label=f"{name[:60]} (n={len(runs)})")
    ax.set(title=title, xlabel="epoch", ylabel="validation accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if grouped:
        ax.legend(
            fontsize=8,
            loc="center left",
            bbox_to_anchor=(1.01, 0.5),
            title="line: mean, band: min - max",
            title_fontsize=8,
        )
    fig.tight_layout()
    return fig
