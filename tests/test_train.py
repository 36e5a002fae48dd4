"""train.py end to end: the run folder it writes, the CLI, sweeps and bad settings."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.data import BatchLoader, load_dataset
from src.errors import ConfigError
from src.model.vit import VisionTransformer
from src.training.loops import evaluate
from src.training.run import train
from tests.conftest import ROOT, TINY_RUN, compose_config

METRIC_COLUMNS = [
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "epoch_seconds",
    "images_per_second",
    "run_seconds",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_config(TINY_RUN)
    returned = train(cfg, run_dir)
    return run_dir, cfg, returned


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_summary_records_a_completed_run(tiny_run):
    run_dir, _, returned = tiny_run
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "completed"
    assert summary["epochs_completed"] == 2 and summary["best_epoch"] in (1, 2)
    assert returned == summary["best_val_acc"]  # what the Hydra main hands a sweeper
    for key in ("test_acc", "best_val_acc"):
        assert 0.0 <= summary[key] <= 1.0
    assert summary["test_loss"] > 0 and summary["train_seconds"] > 0
    assert summary["device"] == "cpu" and summary["classes"] == [str(i) for i in range(10)]


def test_metrics_csv_has_one_row_per_epoch(tiny_run):
    run_dir, _, _ = tiny_run
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics.columns) == METRIC_COLUMNS
    assert metrics["epoch"].tolist() == [1, 2]
    assert metrics["step"].is_monotonic_increasing and (metrics["images_per_second"] > 0).all()
    summary = read_json(run_dir / "summary.json")
    best_row = metrics.set_index("epoch").loc[summary["best_epoch"]]
    assert best_row["val_acc"] == pytest.approx(summary["best_val_acc"])
    assert best_row["val_acc"] == metrics["val_acc"].max()  # chosen on validation


def test_model_json_and_best_weights_rebuild_the_model_that_was_tested(tiny_run):
    run_dir, cfg, _ = tiny_run
    card = read_json(run_dir / "model.json")
    assert card["class_names"] == [str(i) for i in range(10)]
    assert card["image_size"] == 16 and card["channels"] == 1 and len(card["mean"]) == 1
    model = VisionTransformer(**card["model"])
    model.load_state_dict(load_file(run_dir / card["weights"]), strict=True)

    data = load_dataset(cfg.dataset)
    batches = BatchLoader(
        data.test, 512, card["image_size"], card["mean"], card["std"], torch.device("cpu")
    )
    stats = evaluate(model, batches, torch.device("cpu"))
    summary = read_json(run_dir / "summary.json")
    assert stats.acc == pytest.approx(summary["test_acc"])
    assert stats.loss == pytest.approx(summary["test_loss"], rel=1e-5)


def test_last_checkpoint_holds_the_full_training_state_and_loads_without_pickle(tiny_run):
    run_dir, _, _ = tiny_run
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "step", "best", "rng", "data"} <= set(state)
    assert state["epoch"] == 2
    [rng] = state["rng"]  # one per process
    assert set(rng) == {"python", "numpy", "torch", "cuda"}
    [data] = state["data"]
    assert set(data) == {"order", "augment"}
    assert set(state["model"]) == set(load_file(run_dir / "weights" / "best.safetensors"))


def test_curves_plot_and_tensorboard_scalars(tiny_run):
    run_dir, _, _ = tiny_run
    with Image.open(run_dir / "plots" / "curves.png") as image:
        assert image.format == "PNG" and image.width > 1000 and image.height > 300
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "misc/lr", "test/acc"} <= tags
    assert [e.step for e in events.Scalars("val/acc")] == [1, 2]
    assert "curves" in events.Tags()["images"]


def test_no_temporary_files_are_left_behind(tiny_run):
    run_dir, _, _ = tiny_run
    assert not list(run_dir.rglob("*.tmp"))


def test_the_seed_makes_a_run_repeatable(tmp_path):
    cfg = compose_config(TINY_RUN + ["trainer.epochs=1"])
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    a = load_file(tmp_path / "a" / "weights" / "best.safetensors")
    b = load_file(tmp_path / "b" / "weights" / "best.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_batch_larger_than_the_training_set_is_said_and_counted_as_it_is(tmp_path, caplog):
    train(
        compose_config(
            TINY_RUN
            + [
                "trainer.epochs=1",
                "trainer.batch_size=4096",
                "trainer.accumulate_steps=2",
                "trainer.visualize=false",
            ]
        ),
        tmp_path,
    )
    summary = read_json(tmp_path / "summary.json")
    assert summary["global_batch_size"] == summary["split_sizes"]["train"]  # one batch, no second
    assert pd.read_csv(tmp_path / "metrics.csv")["step"].tolist() == [1]
    assert [r.getMessage() for r in caplog.records if "trainer.batch_size" in r.getMessage()] == [
        f"trainer.batch_size=4096 is more than the {summary['global_batch_size']} training images "
        f"there are: every step takes those {summary['global_batch_size']}, one step an epoch"
    ]


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_cuda_on_a_machine_without_it_is_refused(tmp_path):
    cfg = compose_config(TINY_RUN + ["trainer.device=cuda"])
    with pytest.raises(ConfigError, match="trainer.device=cuda was asked for"):
        train(cfg, tmp_path)
    assert read_json(tmp_path / "summary.json")["status"] == "failed"


def test_default_run_folders_are_dated_and_a_resumed_run_keeps_its_folder():
    import re

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    def hydra_config(*overrides):
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=True).hydra

    fresh = hydra_config()
    assert re.fullmatch(r"outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", fresh.run.dir)
    assert fresh.output_subdir == ".hydra"
    sweep = OmegaConf.to_container(fresh.sweep, resolve=False)
    assert sweep == {
        "dir": "multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}",
        "subdir": "${hydra.job.num}",
    }
    resumed = hydra_config("resume=outputs/2026-01-02/03-04-05")
    assert resumed.run.dir == "outputs/2026-01-02/03-04-05" and resumed.output_subdir is None


# --- the command line, in a subprocess, as a user runs it ---------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_cli_run_writes_hydra_files_and_the_log(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(f"hydra.run.dir={run_dir}", *TINY_RUN, "trainer.epochs=1")
    assert result.returncode == 0, result.stderr
    assert {"config.yaml", "overrides.yaml", "hydra.yaml"} <= {
        p.name for p in (run_dir / ".hydra").iterdir()
    }
    log = (run_dir / "train.log").read_text()
    assert "epoch 1/1" in log and "test acc" in log
    assert read_json(run_dir / "summary.json")["overrides"] == TINY_RUN + ["trainer.epochs=1"]
    for name in (
        "metrics.csv",
        "model.json",
        "weights/best.safetensors",
        "checkpoints/last.pt",
        "plots/curves.png",
    ):
        assert (run_dir / name).is_file(), name


@pytest.mark.slow
def test_hydra_full_error_still_shows_the_traceback_of_a_bad_setting(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", f"hydra.run.dir={tmp_path / 'run'}", "model.patch_size=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "UserError: model.image_size=16" in result.stderr


def read_terminal(command: list[str]) -> str:
    """What ``command`` writes to its standard error when that is a terminal (a pseudo-terminal),
    its standard output thrown away."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=300) == 0
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_progress_bars_on_a_terminal_only_and_a_redirected_log_has_no_carriage_returns(tmp_path):
    """Issue 32: `python train.py > file` filled the file with the bars' carriage returns."""
    with_bars = [o for o in TINY_RUN if not o.startswith("trainer.progress")]
    command = [sys.executable, "train.py", *with_bars]
    out = tmp_path / "train.out"
    with out.open("w") as file:
        result = subprocess.run(
            [*command, f"hydra.run.dir={tmp_path / 'file'}"],
            cwd=ROOT,
            stdout=file,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    text = out.read_text()
    assert result.returncode == 0, text
    assert "\r" not in text and "it/s" not in text  # no bar, not even a last one
    assert "epoch 1/2" in text and "epoch 2/2" in text  # one log line per epoch instead

    shown = read_terminal([*command, f"hydra.run.dir={tmp_path / 'terminal'}"])
    assert "\r" in shown and "epochs:" in shown  # on a terminal, the bars


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, sentence",
    [
        (["model.patch_size=3"], "model.image_size=16 is not divisible by model.patch_size=3"),
        (
            ["dataset=folder", "dataset.root=no/such/pets"],
            "dataset.root=no/such/pets is not a folder",
        ),
    ],
)
def test_cli_bad_setting_gives_one_clear_sentence_and_a_failed_summary(
    tmp_path, overrides, sentence
):
    run_dir = tmp_path / "run"
    result = run_cli(f"hydra.run.dir={run_dir}", *TINY_RUN, *overrides)
    assert result.returncode == 1
    # the sentence alone (issue 32): not Hydra's "Error executing job" and HYDRA_FULL_ERROR lines
    assert result.stderr.startswith(sentence) and len(result.stderr.splitlines()) == 1
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "failed" and sentence in summary["error"]
