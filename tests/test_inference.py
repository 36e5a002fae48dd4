"""inference.py: listing runs, picking one, and predicting, interactively and from flags."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch
from PIL import Image

import inference
from src.data import BatchLoader, load_dataset
from src.data.images import read_image
from src.errors import ConfigError
from src.model.vit import attention_rollout
from src.predict.predictor import Predictor, image_paths
from src.runs.catalogue import Run, choose_run, find_runs, load_model
from src.training.run import train
from tests.conftest import ROOT, TINY_RUN, compose_config

INFERENCE = str(ROOT / "inference.py")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A project folder with one trained run, one run without weights, and test images as PNGs."""
    home = tmp_path_factory.mktemp("project")
    run_dir = home / "outputs" / "2026-01-02" / "10-00-00"
    cfg = compose_config(TINY_RUN)
    train(cfg, run_dir)

    broken = home / "outputs" / "2026-01-03" / "09-00-00"
    broken.mkdir(parents=True)
    newer = (datetime.now() + timedelta(minutes=5)).isoformat(timespec="seconds")
    (broken / "summary.json").write_text(
        json.dumps({"status": "failed", "started_at": newer, "dataset": "digits"})
    )
    (broken / ".hydra").mkdir()  # a run stopped at a bad setting: its overrides are Hydra's alone
    (broken / ".hydra" / "overrides.yaml").write_text("- model.patch_size=3\n")

    data = load_dataset(cfg.dataset)
    images = home / "images"
    images.mkdir()
    for i in range(12):  # PNG is lossless, so these are exactly the test-split pixels
        Image.fromarray(data.test.images[i, 0].numpy()).save(images / f"test_{i:02d}.png")
    return home, run_dir, broken, data


def run_inference(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``python inference.py ARGS`` in ``cwd``: a real process, as a user runs it."""
    return subprocess.run(
        [sys.executable, INFERENCE, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def call_inference(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """``inference.main(ARGS)`` in this process, from ``cwd``, with ``stdin`` as its input: what
    the command does, without a new interpreter's seconds of imports (run_inference covers the
    command line itself)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.setattr(sys, "stdin", io.StringIO(stdin))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = inference.main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_predictions_equal_what_evaluation_computed(workspace):
    home, run_dir, _, data = workspace
    predictor = Predictor(Run.read(run_dir))
    card = predictor.card
    batches = BatchLoader(
        data.test, 12, card["image_size"], card["mean"], card["std"], torch.device("cpu")
    )
    images, labels = next(iter(batches))
    with torch.no_grad():
        expected = predictor.model(images).softmax(dim=-1)
    for i, path in enumerate(sorted((home / "images").glob("*.png"))):
        got = predictor.probabilities(read_image(path, card["channels"]))
        torch.testing.assert_close(got, expected[i], atol=1e-5, rtol=1e-4)
        top = predictor.predict(path, topk=3)
        assert top.classes[0] == card["class_names"][expected[i].argmax()]
        assert top.probabilities == sorted(top.probabilities, reverse=True)


def test_runs_are_found_newest_first_and_unusable_ones_say_why(workspace):
    home, run_dir, broken, _ = workspace
    runs = find_runs([home / "outputs"])
    assert [r.path for r in runs] == [broken, run_dir]
    assert runs[0].problem == "no model.json" and not runs[0].usable
    assert runs[1].usable and runs[1].status == "completed"


def test_a_damaged_run_folder_says_which_file_is_damaged(workspace, tmp_path):
    _, run_dir, _, _ = workspace
    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    (copy / "weights" / "best.safetensors").write_bytes(
        b"\x00" * 64
    )  # was "does not match model.json"
    with pytest.raises(
        ConfigError, match=r"best.safetensors is damaged \(.*\); .*, or pick another run."
    ):
        load_model(Run.read(copy))
    (copy / "model.json").write_text("{ not json")  # was "no model.json"
    assert Run.read(copy).problem == "model.json damaged"


def test_choose_run_by_path_latest_and_best(workspace):
    home, run_dir, broken, _ = workspace
    roots = [home / "outputs"]
    assert choose_run("latest", roots).path == run_dir  # the newer run has no weights
    assert choose_run("best", roots).path == run_dir
    assert choose_run(str(run_dir), roots).path == run_dir
    with pytest.raises(ConfigError, match="cannot be used \\(no model.json\\)"):
        choose_run(str(broken), roots)
    with pytest.raises(ConfigError, match="no such run folder"):
        choose_run(str(home / "nope"), roots)
    with pytest.raises(ConfigError, match="no completed run with weights"):
        choose_run("latest", [home / "empty"])


def test_latest_and_best_say_which_run_they_took_and_what_they_passed_over(workspace, tmp_path):
    """Issue 32: `best` silently took a weak completed run over a far better one still training."""
    home, run_dir, broken, _ = workspace
    outputs = tmp_path / "outputs"
    done = Path(shutil.copytree(run_dir, outputs / "done"))
    shutil.copytree(broken, outputs / "broken")  # failed, 5 minutes newer

    def newer_copy(name: str, minutes: int, **summary_changes) -> Path:
        copy = Path(shutil.copytree(run_dir, outputs / name))
        summary = json.loads((copy / "summary.json").read_text())
        started = datetime.now() + timedelta(minutes=minutes)
        summary.update(started_at=started.isoformat(timespec="seconds"), **summary_changes)
        (copy / "summary.json").write_text(json.dumps(summary))
        return copy

    training = newer_copy("training", 10, status="running", best_val_acc=0.96)
    (newer_copy("no_weights", 1) / "weights" / "best.safetensors").unlink()
    val = json.loads((done / "summary.json").read_text())["best_val_acc"]

    for spec, newer in (("best", ""), ("latest", " (newer)")):
        result = call_inference(
            home, "--run", spec, "--images", "images/test_00.png", "--roots", str(outputs)
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("images/test_00.png:")  # stdout: the predictions alone
        assert result.stderr.splitlines() == [
            f"--run {spec}: {done} (vit_digits on digits, validation accuracy {val:.2%}, 2 epochs)",
            f"  passed over{newer}: 1 still training, 1 failed, 1 without weights; only "
            "completed runs with weights count",
            f"  {training} (still training) has 96.00% so far: --run {training} uses its best "
            "weights now",
        ]

    alone = tmp_path / "alone"
    shutil.copytree(training, alone / "training")
    with pytest.raises(
        ConfigError, match=r"weights under .*alone/ \(passed over: 1 still training\);"
    ):
        choose_run("best", [alone])


def test_list_shows_every_run_with_its_status(workspace):
    home, _, _, _ = workspace
    result = call_inference(home, "--list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "best val" in lines[0] and "status" in lines[0]
    assert "failed, no model.json" in lines[1] and "model.patch_size=3" in lines[1]  # newest first
    assert "completed" in lines[2] and "digits" in lines[2] and "vit_digits" in lines[2]


def test_flags_predict_a_glob_and_write_csv(workspace, tmp_path):
    home, run_dir, _, _ = workspace
    out_csv = tmp_path / "predictions.csv"
    result = run_inference(
        home,
        "--run",
        str(run_dir),
        "--images",
        "images/*.png",
        "--topk",
        "2",
        "--csv",
        str(out_csv),
    )
    assert result.returncode == 0, result.stderr
    assert (
        len([line for line in result.stdout.splitlines() if line.startswith("images/test_")]) == 12
    )
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 12 and set(rows[0]) == {"path", "top1", "prob1", "top2", "prob2"}
    predictor = Predictor(Run.read(run_dir))
    first = predictor.predict(home / "images" / "test_00.png", topk=2)
    assert rows[0]["top1"] == first.classes[0]
    assert float(rows[0]["prob1"]) == pytest.approx(first.probabilities[0], abs=1e-5)


def test_interactive_session_picks_a_run_and_survives_bad_input(workspace):
    home, _, _, _ = workspace
    answers = (
        "\n".join(
            [
                "1",  # the run without weights: refused, asked again
                "9",  # out of range: asked again
                "",  # Enter: the newest completed run
                "missing.png",  # no such file: reported, loop goes on
                "images/test_00.png",
                "images",  # a whole folder
                "q",
            ]
        )
        + "\n"
    )
    result = call_inference(home, stdin=answers)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Run 1 cannot be used (no model.json)" in out
    assert "Type a number from 1 to 2" in out
    assert "Using outputs/2026-01-02/10-00-00" in out
    assert "missing.png: no such file, folder or matching files." in out
    assert out.count("images/test_00.png:") == 2  # once alone, once from the folder
    assert "images/test_11.png:" in out


def test_interactive_ends_cleanly_on_ctrl_d(workspace):
    home, _, _, _ = workspace
    result = call_inference(home, stdin="2\n")  # then end of input
    assert result.returncode == 0 and "Using" in result.stdout


@pytest.mark.parametrize(
    "args, sentence",
    [
        (["--run", "no/such/run", "--images", "x.png"], "--run no/such/run: no such run folder"),
        (
            ["--run", "latest", "--images", "images/nothing_*.png"],
            "no such file, folder or matching files",
        ),
        # issue 21: an IsADirectoryError traceback, after every image had been predicted
        (
            ["--run", "latest", "--images", "images", "--csv", "images"],
            "--csv images is a folder; give a file name, e.g. --csv images/predictions.csv.",
        ),
        (
            ["--run", "latest", "--images", "images", "--csv", "no/such/out.csv"],
            "--csv no/such/out.csv: the folder no/such does not exist; create it first.",
        ),
        # the CSV replaced the image it was asked to predict
        (
            ["--run", "latest", "--images", "images/test_00.png", "--csv", "images/test_00.png"],
            "--csv images/test_00.png is a file that is not a .csv, "
            "and writing there would replace it",
        ),
        # a FileExistsError traceback; trainer.device named for --device
        (
            [
                "--run",
                "latest",
                "--images",
                "images/test_00.png",
                "--attention",
                "--out",
                "images/test_00.png",
            ],
            "--out images/test_00.png is a file; give a folder (it is made when missing).",
        ),
        (
            ["--run", "latest", "--export-timm", "images/test_00.png"],
            "--export-timm images/test_00.png is a file",
        ),
        (
            ["--run", "latest", "--images", "images", "--device", "tpu"],
            "--device 'tpu' is not known; use auto, cpu or cuda.",
        ),
    ],
)
def test_bad_flags_exit_non_zero_with_one_sentence(workspace, args, sentence):
    home, _, _, _ = workspace
    images = {p: p.read_bytes() for p in (home / "images").iterdir()}
    result = call_inference(home, *args)
    assert result.returncode == 1
    assert sentence in result.stderr and "Traceback" not in result.stderr
    assert {p: p.read_bytes() for p in (home / "images").iterdir()} == images


def test_nothing_under_outputs(tmp_path):
    listed = call_inference(tmp_path, "--list")
    assert listed.returncode == 0 and "No runs under outputs or multirun yet." in listed.stdout
    asked = run_inference(tmp_path, stdin="\n")  # the command's own exit status and sentence
    assert asked.returncode == 1 and "there are no runs under outputs or multirun" in asked.stderr
    assert "Traceback" not in asked.stderr


def test_bad_image_files_are_skipped_with_a_reason(workspace, tmp_path):
    home, run_dir, _, _ = workspace
    (tmp_path / "a_notes.png").write_text("this is not an image")
    good = (home / "images" / "test_00.png").read_bytes()
    (tmp_path / "b_truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "c_good.png").write_bytes(good)
    result = call_inference(home, "--run", str(run_dir), "--images", str(tmp_path))
    assert result.returncode == 0
    assert "a_notes.png: not an image PIL can read" in result.stderr
    assert "b_truncated.png: the image could not be read" in result.stderr
    assert "c_good.png:" in result.stdout


def test_images_over_the_pixel_limit_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("L", (40, 40)).save(tmp_path / "big.png")  # 1,600 pixels: over the limit
    with pytest.raises(ConfigError, match="too large to decode safely"):
        read_image(tmp_path / "big.png", channels=1)


def test_colour_grey_and_odd_sizes_are_converted(tmp_path):
    Image.new("RGBA", (30, 20), (255, 0, 0, 128)).save(tmp_path / "rgba.png")
    Image.new("P", (5, 9)).save(tmp_path / "palette.png")
    assert read_image(tmp_path / "rgba.png", channels=1).shape == (1, 20, 30)
    assert read_image(tmp_path / "palette.png", channels=3).shape == (3, 9, 5)
    assert [p.name for p in image_paths(str(tmp_path))] == ["palette.png", "rgba.png"]


def test_attention_overlay_is_saved(workspace, tmp_path):
    home, run_dir, _, _ = workspace
    result = call_inference(
        home,
        "--run",
        str(run_dir),
        "--images",
        "images/test_01.png",
        "--attention",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "test_01_attention.png") as figure:
        assert figure.width > 800


def test_attention_rollout_rows_sum_to_one():
    attentions = [torch.softmax(torch.randn(2, 3, 5, 5), dim=-1) for _ in range(4)]
    rollout = attention_rollout(attentions)
    assert rollout.shape == (2, 5, 5)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 5))
