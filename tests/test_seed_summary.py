"""A sweep's jobs that differ only in seed, taken together in its summary (issue 34, item 2):
summary_seeds.csv and summary.md give one row per setting with the mean, standard deviation, n,
min and max of each final metric; val_curves.png draws each setting's mean with a min-max band."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys

import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from src.report import seeds, sweeps
from tests.conftest import ROOT, TINY_RUN


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seeds")
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--multirun",
            f"hydra.sweep.dir={folder}",
            *TINY_RUN,
            "seed=0,1,2",
            "optimizer.lr=1e-3,5e-4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def test_a_sweep_over_seeds_and_learning_rates_has_one_row_per_learning_rate(sweep):
    jobs = pd.read_csv(sweep / "summary.csv")  # one row per job, as before
    assert jobs["job"].tolist() == [0, 1, 2, 3, 4, 5]
    table = pd.read_csv(sweep / "summary_seeds.csv")
    assert list(table.columns) == seeds.COLUMNS
    assert [s.split()[-1] for s in table["setting"]] == [
        "optimizer.lr=0.001",
        "optimizer.lr=0.0005",
    ]
    assert table["seeds"].tolist() == ["0 1 2"] * 2
    assert table["jobs"].tolist() == ["0 2 4", "1 3 5"]  # seed is the outer loop of the grid
    assert table["runs"].tolist() == [3, 3] and table["best_val_acc_n"].tolist() == [3, 3]
    for row, jobs_of_row in zip(table.itertuples(), ([0, 2, 4], [1, 3, 5])):
        for metric in ("best_val_acc", "test_acc", "train_seconds"):
            values = jobs.set_index("job").loc[jobs_of_row, metric].tolist()
            assert getattr(row, f"{metric}_mean") == pytest.approx(statistics.mean(values))
            assert getattr(row, f"{metric}_std") == pytest.approx(statistics.stdev(values))
            assert getattr(row, f"{metric}_min") == min(values)
            assert getattr(row, f"{metric}_max") == max(values)

    markdown = (sweep / "summary.md").read_text()
    assert "## Over seeds" in markdown and "## Jobs" in markdown
    rows = [line for line in markdown.split("## Jobs")[0].splitlines() if line.startswith("| ")]
    settings = [line.split(" | ")[1:4] for line in rows[2:]]  # after the heading and its rule
    best = table.sort_values("best_val_acc_mean", ascending=False)["setting"].str.split().str[-1]
    assert settings == [[f"`{lr}`", "0 1 2", "3"] for lr in best]


def test_the_figure_draws_each_setting_as_its_mean_with_a_min_max_band(sweep):
    jobs = sweeps.collect(sweep)
    grouped = seeds.curves(sweep, jobs)
    assert [len(runs) for runs in grouped.values()] == [3, 3]
    fig = seeds.plot_over_seeds(grouped, "title")
    ax = fig.axes[0]
    for index, runs in enumerate(grouped.values()):
        per_epoch = pd.concat(runs).groupby("epoch")["val_acc"]
        mean = ax.lines[2 * index]  # the mean, then the legend's empty line
        assert mean.get_ydata() == pytest.approx((per_epoch.mean() * 100).tolist())
        band = [c for c in ax.collections if isinstance(c, PolyCollection)][index]
        low, high = (
            band.get_paths()[0].vertices[:, 1].min(),
            band.get_paths()[0].vertices[:, 1].max(),
        )
        assert low == pytest.approx(per_epoch.min().min() * 100)
        assert high == pytest.approx(per_epoch.max().max() * 100)
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "line: mean, band: min - max"
    assert [t.get_text().endswith("(n=3)") for t in legend.get_texts()] == [True, True]
    assert (sweep / "val_curves.png").stat().st_size > 10_000


def test_a_plain_sweep_over_seeds_is_one_row_of_three(sweep, tmp_path, capsys):
    """Jobs 0, 2, 4 of the sweep are `seed=0,1,2` at one learning rate: summarised on their own
    (python -m src.report.sweeps FOLDER), they are one row with n=3."""
    for job in ("0", "2", "4"):
        shutil.copytree(sweep / job, tmp_path / job)
    assert sweeps.main([str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "summary_seeds.csv")
    assert len(table) == 1 and table.loc[0, "best_val_acc_n"] == 3
    assert table.loc[0, "seeds"] == "0 1 2" and table.loc[0, "jobs"] == "0 2 4"
    assert str(tmp_path / "summary_seeds.csv") in capsys.readouterr().out.splitlines()


def test_only_completed_runs_count_and_a_single_run_has_no_spread():
    table = pd.DataFrame(
        {
            "job": ["0", "1", "2", "3"],
            "overrides": [
                "seed=0 model.depth=2",
                "seed=1 model.depth=2",
                "seed=2 model.depth=2",
                "model.depth=4",
            ],
            "status": ["completed", "completed", "failed", "completed"],
            "best_val_acc": [0.5, 0.7, None, 0.9],
            "test_acc": [0.4, 0.6, None, 0.8],
            "train_seconds": [1.0, 3.0, None, 2.0],
        }
    )
    table = seeds.over_seeds(table).set_index("setting")
    two = table.loc["model.depth=2"]
    assert (two["runs"], two["best_val_acc_n"], two["seeds"], two["jobs"]) == (
        3,
        2,
        "0 1 2",
        "0 1 2",
    )
    assert two["best_val_acc_mean"] == pytest.approx(0.6)
    assert two["best_val_acc_std"] == pytest.approx(statistics.stdev([0.5, 0.7]))
    one = table.loc["model.depth=4"]
    assert one["best_val_acc_n"] == 1 and pd.isna(one["best_val_acc_std"]) and one["seeds"] == ""
    lines = seeds.markdown(table.reset_index())
    assert "| 2 of 3 |" in lines[-1] and "60.00% ± 14.14" in lines[-1]
    assert "| 1 | `model.depth=4` | - | 1 | 90.00% |" in lines[-2]
