"""Sweeps that survive a failed job and summarise themselves; Optuna, joblib; experiment presets."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import subprocess
import sys
import threading

import pandas as pd
import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.report import sweeps
from tests.conftest import ROOT, TINY_RUN, compose_config

needs_plugins = pytest.mark.skipif(
    importlib.util.find_spec("optuna") is None
    or importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None,
    reason="needs requirements-sweeps.txt (hydra-optuna-sweeper, hydra-joblib-launcher)",
)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def sweep_with_a_failure(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("sweep")
    result = run_cli(
        "--multirun",
        f"hydra.sweep.dir={sweep}",
        *TINY_RUN,
        "trainer.visualize=false",
        "model.patch_size=4,3,8",
    )
    return sweep, result


@pytest.mark.slow
def test_a_failed_job_is_recorded_and_the_others_still_run(sweep_with_a_failure):
    sweep, result = sweep_with_a_failure
    assert result.returncode != 0  # Hydra reports the failure once every job has run
    assert "model.image_size=16 is not divisible by model.patch_size=3" in result.stderr
    assert "Error executing job with overrides: [" in result.stderr  # which job, in a sweep
    varied = {job: OmegaConf.load(sweep / job / ".hydra" / "overrides.yaml")[-1] for job in "012"}
    assert varied == {
        "0": "model.patch_size=4",
        "1": "model.patch_size=3",
        "2": "model.patch_size=8",
    }
    for job, patch in (("0", 4), ("2", 8)):  # each job trained the model its overrides asked for
        assert (sweep / job / "weights" / "best.safetensors").is_file()
        assert json.loads((sweep / job / "model.json").read_text())["model"]["patch_size"] == patch

    table = pd.read_csv(sweep / "summary.csv")
    assert table["job"].tolist() == [0, 1, 2]
    assert table["status"].tolist() == ["completed", "failed", "completed"]
    assert "not divisible by model.patch_size=3" in table.loc[1, "error"]
    assert (
        table.loc[[0, 2], "best_val_acc"].notna().all() and table.loc[[0, 2], "params"].gt(0).all()
    )
    assert list(table.columns) == sweeps.COLUMNS

    markdown = (sweep / "summary.md").read_text()
    assert "3 runs: 2 completed, 1 failed" in markdown
    ranked = [line for line in markdown.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert "failed: model.image_size=16" in ranked[-1]  # failures rank last
    best_first = table.sort_values("best_val_acc", ascending=False)["job"].iloc[0]
    assert ranked[0].startswith(f"| 1 | {best_first} |")
    assert (sweep / "val_curves.png").stat().st_size > 10_000


@pytest.mark.slow
def test_each_job_logs_its_overrides_as_tensorboard_hparams(sweep_with_a_failure):
    sweep, _ = sweep_with_a_failure
    events = EventAccumulator(str(sweep / "2" / "tensorboard")).Reload()
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert {"hparam/best_val_acc", "hparam/test_acc"} <= set(events.Tags()["scalars"])


@pytest.mark.slow
def test_one_command_rebuilds_the_summary_of_any_folder(sweep_with_a_failure, tmp_path, capsys):
    sweep, _ = sweep_with_a_failure
    for name in ("summary.csv", "summary.md", "val_curves.png"):
        (sweep / name).unlink()
    assert sweeps.main([str(sweep)]) == 0
    assert all((sweep / name).is_file() for name in ("summary.csv", "summary.md", "val_curves.png"))
    assert sweeps.main([str(tmp_path)]) == 1
    assert "holds no runs" in capsys.readouterr().err


def test_jobs_that_end_together_write_the_sweep_summary_one_at_a_time(tmp_path):
    """A job that read its neighbour's summary.json while it still said "running" must not write
    the table after the neighbour's own refresh (seen once in CI under the joblib launcher)."""
    summary = tmp_path / "0" / "summary.json"
    summary.parent.mkdir()
    summary.write_text(json.dumps({"status": "running"}))
    fd = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as the neighbour's refresh holds it
    refresh = threading.Thread(target=sweeps.refresh_summary, args=(tmp_path,))
    refresh.start()
    refresh.join(timeout=1.0)
    assert refresh.is_alive() and not (tmp_path / "summary.csv").exists()  # it waits its turn
    summary.write_text(json.dumps({"status": "completed"}))
    os.close(fd)
    refresh.join(timeout=60)
    assert pd.read_csv(tmp_path / "summary.csv")["status"].tolist() == ["completed"]


def test_experiment_presets_override_only_what_differs():
    default, smoke = compose_config(), compose_config(["+experiment=smoke"])
    assert (smoke.trainer.epochs, smoke.model.depth) == (2, 1)
    assert smoke.optimizer == default.optimizer and smoke.dataset == default.dataset
    mnist = compose_config(["+experiment=mnist_cpu"])
    assert mnist.dataset.name == "mnist" and mnist.model.image_size == 16
    assert mnist.model.embed_dim == default.model.embed_dim and mnist.optimizer.lr == 3e-3


@needs_plugins
@pytest.mark.slow
def test_an_optuna_search_goes_on_past_a_failed_trial(tmp_path):
    """model.patch_size 3 or 4 added to the search: 3 does not divide the 16-px input, so those
    trials fail (with seed 1 the sampler draws 3, 4, 3), and the search completes."""
    result = run_cli(
        "--multirun",
        "+hparams_search=optuna",
        "model.patch_size=choice(3,4)",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.seed=1",
        f"hydra.sweep.dir={tmp_path}",
        *TINY_RUN,
        "trainer.visualize=false",
    )
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "summary.csv")
    assert set(table["status"]) == {"completed", "failed"} and len(table) == 3
    assert (
        OmegaConf.load(tmp_path / "optimization_results.yaml").best_params["model.patch_size"] == 4
    )


@needs_plugins
@pytest.mark.slow
def test_optuna_with_the_joblib_launcher_runs_its_trials_at_the_same_time(tmp_path):
    result = run_cli(
        "--multirun",
        "+hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={tmp_path}",
        *TINY_RUN,
        "trainer.visualize=false",
    )
    assert result.returncode == 0, result.stderr
    # summary.json's times are whole seconds and a tiny trial can fit in one, so the spans come
    # from file times in nanoseconds: Hydra writes config.yaml as a job starts, summary.json last.
    (start0, end0), (start1, end1) = [
        (
            (tmp_path / str(job) / ".hydra" / "config.yaml").stat().st_mtime_ns,
            (tmp_path / str(job) / "summary.json").stat().st_mtime_ns,
        )
        for job in (0, 1)
    ]
    assert start0 < end1 and start1 < end0  # the two trials overlapped
    table = pd.read_csv(tmp_path / "summary.csv")  # and the search's own records
    assert table["status"].tolist() == ["completed", "completed"]
    assert all("optimizer.lr=" in o and "model.depth=" in o for o in table["overrides"])
    learning_rates = set()
    for job in (0, 1):  # each joblib worker composed its own trial's settings
        hydra = tmp_path / str(job) / ".hydra"
        asked = next(o for o in OmegaConf.load(hydra / "overrides.yaml") if "optimizer.lr=" in o)
        lr = float(asked.split("=", 1)[1])
        assert OmegaConf.load(hydra / "config.yaml").optimizer.lr == lr
        learning_rates.add(lr)
    assert len(learning_rates) == 2
    results = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert results.best_value == pytest.approx(table["best_val_acc"].max())


WITHOUT_OPTUNA = (
    "import runpy, sys; sys.modules['optuna'] = None; "  # as if it were not installed
    "sys.argv = ['train.py', *sys.argv[1:]]; runpy.run_path('train.py', run_name='__main__')"
)


@pytest.mark.slow
def test_without_optuna_a_run_has_no_plugin_warning_and_a_search_names_the_install(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            WITHOUT_OPTUNA,
            *TINY_RUN,
            "trainer.epochs=1",
            "trainer.visualize=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "Error importing" not in run.stderr and "Warning" not in run.stderr, run.stderr

    search = subprocess.run(
        [
            sys.executable,
            "-c",
            WITHOUT_OPTUNA,
            "--multirun",
            "+hparams_search=optuna",
            f"hydra.sweep.dir={tmp_path / 'search'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert search.returncode == 1
    assert search.stderr.splitlines()[0] == (
        "+hparams_search=optuna needs the optuna package: pip install -r requirements-sweeps.txt"
    )
    assert "Traceback" not in search.stderr
