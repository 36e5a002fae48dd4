"""Leftovers (issue 31, item 5): a run that stopped before its first checkpoint starts again in
its own folder, by the command that failed or by `resume=` (before, each sent the user to the
other), keeping its earlier train.log; and the unfinished file of a process killed mid-write
(`.last.pt.PID.tmp`) is removed when a run starts or resumes in the folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from src.errors import ConfigError, OutOfDiskSpace
from src.training.run import train
from tests.conftest import ROOT, TINY_RUN, compose_config, fill_the_disk_at_checkpoint


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=300)
    return process.returncode, err


def wait_for(path: Path, text: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never said {text!r}")


def test_a_run_that_stopped_before_its_first_epoch_ended_starts_again_in_its_folder(tmp_path):
    """The loop of issue 31: the same command said the folder already held a run (resume it), and
    `resume=` said there was nothing to resume (start it again). Now both start it again, there."""
    run = tmp_path / "run"
    command = [*TINY_RUN, "trainer.epochs=1", "trainer.batch_size=8"]  # 160 steps to stop in
    stopping = start(f"hydra.run.dir={run}", *command)
    wait_for(run / "train.log", "test images", stopping)  # the data read, the first epoch begun
    stopping.send_signal(signal.SIGINT)
    code, stopped = finish(stopping)
    assert code == 1, stopped
    assert read_json(run / "summary.json")["status"] == "interrupted"
    assert not (run / "checkpoints" / "last.pt").exists()
    earlier_log = (run / "train.log").read_text()
    copy = Path(shutil.copytree(run, tmp_path / "copy"))  # a folder for each way back

    again, resumed = start(f"hydra.run.dir={copy}", *command), start(f"resume={run}")
    for process in (again, resumed):  # before: "already holds a run", "nothing to resume"
        code, err = finish(process)
        assert code == 0, err[-3000:]
    for folder in (copy, run):
        summary = read_json(folder / "summary.json")
        assert summary["status"] == "completed" and summary["epochs_completed"] == 1
        assert pd.read_csv(folder / "metrics.csv")["epoch"].tolist() == [1]
        assert (folder / "train.log").read_text().startswith(earlier_log)  # kept, added to
    summary = read_json(run / "summary.json")
    assert summary["resumes"][0]["from_epoch"] == 0
    assert summary["overrides"] == command  # its own, from when it was started
    assert stopped == (  # and the stop said so
        f"stopped by SIGINT before the first epoch ended; start it again (from epoch 0, in the "
        f"same folder) with: python train.py resume={run}\n"
    )


def test_a_full_disk_before_the_first_checkpoint_says_how_to_start_again_and_that_works(
    tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    fill_the_disk_at_checkpoint(monkeypatch, 1)
    with pytest.raises(OutOfDiskSpace) as err:
        train(compose_config(TINY_RUN), run_dir)
    assert str(err.value) == (
        f"the disk holding {run_dir} is full, so the run stopped; free some space, then start it "
        f"again (it had not finished an epoch, so from epoch 0, in the same folder) with: "
        f"python train.py resume={run_dir}"
    )
    monkeypatch.undo()
    train(compose_config(TINY_RUN + [f"resume={run_dir}"]), run_dir)  # what the sentence says
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["resumes"][0]["from_epoch"] == 0
    assert pd.read_csv(run_dir / "metrics.csv")["epoch"].tolist() == [1, 2]  # epoch 1 once


def test_a_lost_checkpoint_of_a_longer_run_is_not_started_over(tmp_path):
    """Starting again is for a run with nothing to resume: one that trained epochs and lost its
    last.pt keeps its weights and metrics, and is told to restore it."""
    train(compose_config(TINY_RUN), tmp_path)
    (tmp_path / "checkpoints" / "last.pt").unlink()
    weights = (tmp_path / "weights" / "best.safetensors").read_bytes()
    with pytest.raises(ConfigError, match=r"there is no checkpoints/last.pt, though metrics.csv"):
        train(compose_config(TINY_RUN + ["trainer.epochs=3", f"resume={tmp_path}"]), tmp_path)
    assert (tmp_path / "weights" / "best.safetensors").read_bytes() == weights


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("how", ["start", "resume"])
def test_unfinished_files_of_killed_processes_are_removed_when_a_run_opens_its_folder(
    tmp_path, how
):
    """kill -9 during torch.save left a 0-byte checkpoints/.last.pt.PID.tmp that nothing removed;
    a live process's file (here this test's parent's) is left alone."""
    run_dir = tmp_path / "run"
    if how == "resume":
        train(compose_config(TINY_RUN), run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    stale = [
        run_dir / "checkpoints" / f".last.pt.{dead_pid()}.tmp",
        run_dir / "weights" / f".best.safetensors.{dead_pid()}.tmp",
        run_dir / f".summary.json.{dead_pid()}.tmp",
    ]
    live = run_dir / f".metrics.csv.{os.getppid()}.tmp"
    for path in [*stale, live]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    epochs = ["trainer.epochs=3", f"resume={run_dir}"] if how == "resume" else []
    train(compose_config(TINY_RUN + epochs), run_dir)
    assert [path for path in stale if path.exists()] == [] and live.exists()
