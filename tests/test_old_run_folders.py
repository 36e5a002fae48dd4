"""A run folder written before src/ was reorganised still lists, predicts and resumes.

tests/fixtures/run_before_rooms was written by commit d1d71b0 (the last one before the move) with
    python train.py +experiment=smoke trainer.epochs=2 trainer.progress=false \
        trainer.visualize=false hydra.run.dir=tests/fixtures/run_before_rooms
and is used here read-only, through a copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import inference
from src.contract import RunPaths, Status, read_summary
from src.runs.catalogue import Run, find_runs
from src.web.workbench import Workbench, runs_for_page
from tests.conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "run_before_rooms"


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    """A copy of the fixture where a run would be: outputs/DATE/TIME."""
    run = tmp_path / "outputs" / "2026-12-06" / "04-26-35"
    shutil.copytree(FIXTURE, run)
    return run


def test_an_old_run_is_listed_by_inference_and_the_web_page(old_run, capsys):
    roots = [old_run.parents[1]]
    assert inference.main(["--list", "--roots", str(roots[0])]) == 0
    listed = capsys.readouterr().out
    assert str(old_run) in listed and "completed" in listed and "vit_digits" in listed

    table = runs_for_page(find_runs(roots))
    summary = json.loads((old_run / "summary.json").read_text())
    assert table.loc[0, "folder"] == str(old_run) and table.loc[0, "status"] == "completed"
    assert table.loc[0, "test %"] == round(summary["test_acc"] * 100, 2)
    assert [run.path for run in Workbench(roots).runs()] == [old_run]


def test_an_old_run_predicts_the_same_from_inference_and_the_web_page(old_run, tmp_path, capsys):
    digits = load_digits()
    image = tmp_path / "digit.png"
    Image.fromarray((digits.images[0] * 255 / 16).astype("uint8")).save(image)

    assert inference.main(["--run", str(old_run), "--images", str(image), "--topk", "1"]) == 0
    printed = capsys.readouterr().out
    shown = Workbench([old_run.parents[1]]).predict_file(str(old_run), str(image), topk=1)
    assert shown.top is not None
    (best,) = shown.top
    assert best in Run.read(old_run).card["class_names"] and f"digit.png: {best}" in printed


def test_an_old_run_resumes_with_train_py(old_run):
    before = pd.read_csv(old_run / "metrics.csv")
    seconds_before = json.loads((old_run / "summary.json").read_text())["train_seconds"]
    result = subprocess.run(
        [sys.executable, "train.py", f"resume={old_run}", "trainer.epochs=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((old_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 3
    assert summary["resumes"][0]["from_epoch"] == 2
    after = pd.read_csv(old_run / "metrics.csv")
    assert after["epoch"].tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(after.iloc[:2][before.columns], before, check_exact=True)
    # run_seconds came after the fixture: only the epoch trained now has it, counted on from
    # the time the old sessions took
    assert after["run_seconds"].isna().tolist() == [True, True, False]
    assert seconds_before < after["run_seconds"][2] < summary["train_seconds"]


def test_the_contract_names_the_files_an_old_run_folder_holds():
    paths = RunPaths(FIXTURE)
    for path in (
        paths.summary,
        paths.metrics,
        paths.model_card,
        paths.best_weights,
        paths.last_checkpoint,
        paths.hydra_config,
        paths.hydra_overrides,
    ):
        assert path.is_file(), path
    assert paths.plots.is_dir() and paths.tensorboard.is_dir()
    assert read_summary(FIXTURE)["status"] == Status.COMPLETED


def test_a_status_is_written_and_printed_as_plain_text(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"status": Status.INTERRUPTED}))
    assert read_summary(tmp_path) == {"status": "interrupted"}
    assert f"{Status.FAILED}" == str(Status.FAILED) == "failed"
    (tmp_path / "summary.json").write_text("{not json")
    assert read_summary(tmp_path) == {}  # damaged: nothing, for callers that only look
