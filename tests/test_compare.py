"""Comparing runs (issue 34, item 3): `python -m src.report.compare` and the page's Compare tab,
on two tiny runs that train.py (Hydra and all) trains with settings that differ in two keys."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from matplotlib import image as mpimg

from src.report import compare
from src.report.compare import Comparison, runs_named
from src.runs.catalogue import Run
from src.runs.resume import dotted_keys
from src.web.compare_tab import compare_choices, compare_view
from tests.conftest import ROOT, TINY_RUN

# Both runs in one process, through train.py's own Hydra entry point, so each folder gets the
# .hydra/config.yaml and overrides.yaml that Hydra writes.
TRAIN_TWICE = (
    "import runpy, sys\n"
    "for folder, *overrides in ({runs}):\n"
    "    sys.argv = ['train.py', *overrides, 'hydra.run.dir=' + folder]\n"
    "    runpy.run_path('train.py', run_name='__main__')\n"
)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """runs/a (1 epoch at lr 1e-3) and runs/b (2 epochs at lr 5e-4), otherwise the same."""
    runs = tmp_path_factory.mktemp("compare") / "runs"
    plan = [
        (str(runs / "a"), *TINY_RUN, "trainer.epochs=1"),
        (str(runs / "b"), *TINY_RUN, "trainer.epochs=2", "optimizer.lr=5e-4"),
    ]
    done = subprocess.run(
        [sys.executable, "-c", TRAIN_TWICE.format(runs=repr(plan))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return runs


def test_the_diff_lists_exactly_the_two_settings_that_differ(two_runs):
    comparison = Comparison.of([Run.read(two_runs / "a"), Run.read(two_runs / "b")])
    diff = comparison.config_diff()
    assert list(diff.index) == ["optimizer.lr", "trainer.epochs"]
    assert diff.to_dict("index") == {
        "optimizer.lr": {"a": "0.001", "b": "0.0005"},
        "trainer.epochs": {"a": "1", "b": "2"},
    }
    assert len(comparison.configs[0]) > 50  # every setting was compared, not only those
    own, shared = comparison.own_overrides()
    assert own == [["trainer.epochs=1"], ["trainer.epochs=2", "optimizer.lr=5e-4"]]
    assert "model.depth=1" in shared
    metrics = comparison.metrics()
    assert list(metrics.columns) == ["a", "b"]
    assert metrics.loc["epochs"].tolist() == ["1", "2"]
    summary = json.loads((two_runs / "b" / "summary.json").read_text())
    assert metrics.loc["test acc", "b"] == f"{summary['test_acc']:.2%}"


def test_the_command_prints_the_diff_and_writes_both_figures(two_runs, tmp_path, capsys):
    out = tmp_path / "figures"
    assert compare.main([str(two_runs / "a"), str(two_runs / "b"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    settings = printed.split("Settings that differ (2, from .hydra/config.yaml of 2 runs):")[1]
    rows = settings.split("\n\n")[0].strip().splitlines()
    assert [row.split() for row in rows] == [
        ["a", "b"],
        ["optimizer.lr", "0.001", "0.0005"],
        ["trainer.epochs", "1", "2"],
    ]
    assert "b: trainer.epochs=2 optimizer.lr=5e-4" in printed
    assert "test acc" in printed and "best val acc" in printed
    for name in ("compare_curves.png", "compare_per_class.png"):
        height, width, _ = mpimg.imread(out / name).shape
        assert width > 1000 and height > 400, name


def test_a_sweep_folder_compares_every_run_under_it_in_job_order(two_runs, tmp_path):
    sweep = tmp_path / "sweep"
    for job, run in enumerate(("b", "a", "b")):
        shutil.copytree(two_runs / run, sweep / str(job * 5))  # jobs 0, 5, 10
    runs = runs_named([str(sweep)])
    assert [run.path.name for run in runs] == ["0", "5", "10"]
    diff = Comparison.of(runs).config_diff()
    assert diff.columns.tolist() == ["0", "5", "10"]
    assert diff.loc["trainer.epochs"].tolist() == ["2", "1", "2"]


@pytest.mark.parametrize(
    "specs, says",
    [
        (["a"], "names 1 run; give two or more run folders"),
        (["a", "a"], "is named twice; give each run once"),
        (["a", "nowhere"], "nowhere is not a run folder (no summary.json) and holds none"),
    ],
)
def test_too_few_runs_or_a_folder_without_runs_is_one_sentence(two_runs, specs, says, capsys):
    assert compare.main([str(two_runs / s) for s in specs]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and err.count("\n") == 1


def test_settings_are_flattened_to_dotted_keys_with_lists_whole():
    tree = {"optimizer": {"lr": 1e-3, "betas": [0.9, 0.999]}, "logger": {}, "seed": 0}
    assert dotted_keys(tree, keep_empty=True) == {
        "optimizer.lr": 1e-3,
        "optimizer.betas": [0.9, 0.999],
        "logger": {},
        "seed": 0,
    }


def test_the_page_shows_the_same_diff_metrics_and_figures(two_runs):
    runs = [Run.read(two_runs / "b"), Run.read(two_runs / "a")]
    assert [folder for _, folder in compare_choices(runs)] == [str(r.path) for r in runs]
    view = compare_view([str(two_runs / "a"), str(two_runs / "b")])
    assert view.diff["setting"].tolist() == [
        "optimizer.lr",
        "trainer.epochs",
        "(overrides of its own)",
    ]
    assert "2 settings differ" in view.message
    assert view.metrics.columns.tolist() == ["metric", "a", "b"]
    assert view.curves.ndim == 3 and view.curves.shape[1] > 1000
    assert view.per_class.ndim == 3
    assert compare_view([str(two_runs / "a")]).message == "Pick two or more runs to compare."
