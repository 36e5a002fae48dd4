"""A grid sweep continued by its own command (issue 34, item 1): a 4-job sweep killed in job 2
(the third) goes on with the same command: jobs 0-1 are kept, job 2 resumes from its checkpoint,
job 3 runs, the summary lists all four; the joblib and submitit launchers continue it alike. A
command with another sweep is refused in one sentence, with the folder as it was. SIGTERM stops
the sweep (not only its job) with the command that continues it."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from src.runs import sweep
from tests.conftest import ROOT, TINY_RUN

needs_launchers = pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None
    or importlib.util.find_spec("submitit") is None,
    reason="needs requirements-sweeps.txt (hydra-joblib-launcher, hydra-submitit-launcher)",
)

GRID = ["seed=0,1", "optimizer.lr=1e-3,5e-4"]  # jobs 0-3: (0, 1e-3) (0, 5e-4) (1, 1e-3) (1, 5e-4)
SUMMARY_FILES = {"summary.csv", "summary_seeds.csv", "summary.md", "val_curves.png"}
KEPT_LINE = "holds this job's completed run: kept, not run again"


def command(folder: Path, *extra: str) -> list[str]:
    return ["--multirun", f"hydra.sweep.dir={folder}", *TINY_RUN, *GRID, *extra]


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def files(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder``: when it was last written, and what it holds."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def records(job: Path) -> dict[str, tuple[int, bytes]]:
    """What a run wrote: its metrics, summary, weights and checkpoint."""
    names = ["metrics.csv", "summary.json", "weights/best.safetensors", "checkpoints/last.pt"]
    return {name: ((job / name).stat().st_mtime_ns, (job / name).read_bytes()) for name in names}


@pytest.fixture(scope="module")
def continued(tmp_path_factory):
    """The sweep killed (SIGKILL: nothing runs after it) at step 4 of job 2's second epoch (the
    6th epoch the process starts), then the same command again."""
    folder = tmp_path_factory.mktemp("sweep")
    killed = run("tests/helpers/dying_train.py", "0:0:6:4", *command(folder))
    assert killed.returncode == -9, killed.stderr[-3000:]
    before = {job: records(folder / job) for job in "01"}
    job_2 = json.loads((folder / "2" / "summary.json").read_text())
    epoch_1 = pd.read_csv(folder / "2" / "metrics.csv")
    state = (job_2, epoch_1, sorted(p.name for p in folder.iterdir()))
    again = run("train.py", *command(folder))
    return folder, state, before, again


def test_the_same_command_continues_a_killed_sweep(continued):
    folder, (job_2, epoch_1, listing), before, again = continued
    # What the kill left: jobs 0-1 done, job 2 "running" with epoch 1 in its checkpoint, no job 3.
    assert listing == ["0", "1", "2", "multirun.yaml", *sorted(SUMMARY_FILES)]
    assert job_2["status"] == "running" and job_2["epochs_completed"] == 1

    assert again.returncode == 0, again.stderr[-3000:]
    for job in "01":  # kept: not trained again, their records as they were, byte for byte
        assert records(folder / job) == before[job]
        assert KEPT_LINE in (folder / job / "train.log").read_text()
    resumed = json.loads((folder / "2" / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["epochs_completed"] == 2
    assert [r["from_epoch"] for r in resumed["resumes"]] == [1]  # from its checkpoint
    metrics = pd.read_csv(folder / "2" / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]
    pd.testing.assert_frame_equal(metrics.iloc[:1], epoch_1)  # epoch 1 as the first command left it
    assert torch.load(folder / "2" / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    last = json.loads((folder / "3" / "summary.json").read_text())
    assert last["status"] == "completed" and "resumes" not in last  # the job never started before
    assert "optimizer.lr=0.0005" in last["overrides"] and "seed=1" in last["overrides"]

    table = pd.read_csv(folder / "summary.csv")
    assert table["job"].tolist() == [0, 1, 2, 3]
    assert table["status"].tolist() == ["completed"] * 4
    assert table["best_val_acc"].notna().all()


@needs_launchers
def test_submitit_continues_the_sweep_alike(continued):
    """The launcher is not part of the sweep: a finished sweep continued through submitit keeps
    every job, in the jobs' own processes, and trains nothing. (joblib: the next test.)"""
    folder, *_ = continued
    before = {job: records(folder / job) for job in "0123"}
    result = run("train.py", *command(folder), "hydra/launcher=submitit_local")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {job: records(folder / job) for job in "0123"} == before
    assert pd.read_csv(folder / "summary.csv")["status"].tolist() == ["completed"] * 4


def test_another_sweep_in_the_folder_is_refused_in_one_sentence(continued):
    folder, *_ = continued
    before = files(folder)
    result = run("train.py", "--multirun", f"hydra.sweep.dir={folder}", *TINY_RUN, "seed=0,1")
    assert result.returncode == 1
    own = " ".join([*TINY_RUN, *GRID])
    assert result.stderr.splitlines() == [
        f"hydra.sweep.dir={folder} holds another sweep: that sweep has "
        "optimizer.lr=0.001,0.0005, which this command leaves out, so its job folders would get "
        f"other settings; to continue that sweep, give its own overrides ({own}); to start this "
        "one, give it a folder of its own with hydra.sweep.dir= (nothing was changed)."
    ]
    assert files(folder) == before  # not a byte, not a time


@needs_launchers
def test_a_signal_stops_the_sweep_with_the_command_that_continues_it(tmp_path):
    """SIGTERM in job 0 of two: the job stops interrupted and the sweep with it (before, Hydra's
    basic launcher started job 1); the command it names, through joblib's worker processes this
    time, resumes job 0 and runs job 1."""
    folder = tmp_path / "sweep"
    tiny = [o for o in TINY_RUN if not o.startswith("trainer.epochs=")]
    args = ["--multirun", f"hydra.sweep.dir={folder}", *tiny, "trainer.epochs=3", "seed=0,1"]
    args.append("trainer.batch_size=8")
    sweep_process = subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log, deadline = folder / "0" / "train.log", time.monotonic() + 120
    while not (log.is_file() and "epoch 1/3" in log.read_text()):  # 160 steps an epoch to go
        assert time.monotonic() < deadline and sweep_process.poll() is None, "job 0 never trained"
        time.sleep(0.02)
    sweep_process.send_signal(signal.SIGTERM)
    _, err = sweep_process.communicate(timeout=120)
    assert sweep_process.returncode == 1, err[-3000:]
    stopped = re.fullmatch(
        r"job 0 stopped by SIGTERM in epoch ([23]), and the sweep with it; continue the sweep with "
        rf"the same command plus hydra\.sweep\.dir={re.escape(str(folder))}: the completed jobs "
        r"are kept, and job 0 goes on where it stopped\.",
        err.splitlines()[-1],
    )
    assert stopped, err[-3000:]
    assert not (folder / "1").exists()
    assert pd.read_csv(folder / "summary.csv")["status"].tolist() == ["interrupted"]

    again = run("train.py", *args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((folder / "0" / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["epochs_completed"] == 3
    assert [r["from_epoch"] for r in resumed["resumes"]] == [int(stopped[1]) - 1]
    assert pd.read_csv(folder / "0" / "metrics.csv")["epoch"].tolist() == [1, 2, 3]
    assert pd.read_csv(folder / "summary.csv")["status"].tolist() == ["completed"] * 2


BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def saved_sweep(*task: str, target: str = BASIC, subdir: str = "${hydra.job.num}"):
    return OmegaConf.create(
        {
            "hydra": {
                "sweeper": {"_target_": target, "params": None},
                "sweep": {"dir": "multirun/x", "subdir": subdir},
                "overrides": {"task": list(task)},
            }
        }
    )


@pytest.mark.parametrize(
    ("task", "said"),
    [
        (["seed=0,1", "optimizer.lr=0.001,0.0005"], None),  # 1e-3 is 0.001: the same sweep
        (["seed=0,1", "optimizer.lr=1e-3,1e-4"], "that sweep has optimizer.lr=0.001,0.0005 and "),
        (["seed=0,1"], "that sweep has optimizer.lr=0.001,0.0005, which this command leaves out"),
        (
            ["seed=0,1", "optimizer.lr=1e-3,5e-4", "model.depth=2"],
            "this command adds model.depth=2",
        ),
        (["seed=1,0", "optimizer.lr=1e-3,5e-4"], "this command gives seed=1,0 for seed=0,1, the "),
        (["optimizer.lr=1e-3,5e-4", "seed=0,1"], "this command gives optimizer.lr where that "),
    ],
)
def test_a_sweep_is_the_same_only_with_the_same_overrides_values_and_order(task, said):
    found = sweep.difference(saved_sweep("seed=0,1", "optimizer.lr=1e-3,5e-4"), saved_sweep(*task))
    assert found == said if said is None else found.startswith(said), found


def test_a_grid_sweep_and_an_optuna_search_do_not_continue_each_other():
    grid, search = saved_sweep("seed=0,1"), saved_sweep("seed=0,1", target="x.OptunaSweeper")
    assert (
        sweep.difference(grid, search)
        == "that sweep is a grid sweep and this command an Optuna search"
    )
    assert sweep.difference(search, grid).startswith("that sweep is an Optuna search")
    assert sweep.difference(search, search) is None  # a search continues by its study
    assert sweep.difference(grid, saved_sweep("seed=0,1", subdir="job${hydra.job.num}"))
