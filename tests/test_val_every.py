"""trainer.val_every: validating every N epochs (and after the last) leaves training unchanged,
keeps the best weights among the validated epochs, and a stopped run still has best weights."""

from __future__ import annotations

import json
import logging
import os
import signal

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import src.training.fit as fit_module
from src.errors import ConfigError
from src.report.plots import plot_curves
from src.runs.catalogue import Run
from src.training.run import train
from src.training.stopping import TrainingStopped
from src.web.workbench import curves
from tests.conftest import TINY_RUN, compose_config
from tests.test_train import METRIC_COLUMNS

FIVE_EPOCHS = TINY_RUN + ["trainer.epochs=5"]


@pytest.fixture(scope="module")
def every_other(tmp_path_factory):
    """The same five epochs, validated every epoch and every second epoch."""
    runs = tmp_path_factory.mktemp("runs")
    train(compose_config(FIVE_EPOCHS), runs / "every")
    train(compose_config(FIVE_EPOCHS + ["trainer.val_every=2"]), runs / "every_other")
    return runs / "every", runs / "every_other"


def test_validation_every_second_epoch_and_after_the_last(every_other):
    _, run_dir = every_other
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics.columns) == METRIC_COLUMNS  # the usual order, first epoch unvalidated
    assert metrics.loc[metrics["val_acc"].notna(), "epoch"].tolist() == [2, 4, 5]
    assert metrics.loc[metrics["val_loss"].notna(), "epoch"].tolist() == [2, 4, 5]
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("val/acc")] == [2, 4, 5]
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5]


def test_skipping_validation_changes_nothing_else_and_the_best_is_among_the_validated(every_other):
    every, every_other_run = every_other
    a, b = pd.read_csv(every / "metrics.csv"), pd.read_csv(every_other_run / "metrics.csv")
    for column in ("train_loss", "train_acc", "lr", "step"):
        assert a[column].tolist() == b[column].tolist()
    validated = a["epoch"].isin([2, 4, 5])
    assert b.loc[validated, "val_acc"].tolist() == a.loc[validated, "val_acc"].tolist()

    summary = json.loads((every_other_run / "summary.json").read_text())
    best = b.loc[b["val_acc"].idxmax()]
    assert summary["best_epoch"] == best["epoch"] and summary["best_val_acc"] == best["val_acc"]
    assert summary["status"] == "completed" and 0 <= summary["test_acc"] <= 1


def test_figures_and_the_page_draw_only_the_validated_epochs(every_other):
    _, run_dir = every_other
    _, accuracy = curves(Run.read(run_dir))
    validation = accuracy[accuracy["split"] == "validation"]
    assert validation["epoch"].tolist() == [2, 4, 5]
    assert validation["value"].notna().all()

    figure = plot_curves(pd.read_csv(run_dir / "metrics.csv"))
    acc_axes = figure.axes[1]
    lines = {line.get_label(): line for line in acc_axes.get_lines()}
    assert list(lines["validation"].get_xdata()) == [2, 4, 5]
    assert list(lines["train"].get_xdata()) == [1, 2, 3, 4, 5]
    assert "best val" in acc_axes.get_legend_handles_labels()[1][-1]


def test_the_log_says_which_epochs_were_not_validated(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="train"):
        train(compose_config(TINY_RUN + ["trainer.epochs=3", "trainer.val_every=2"]), tmp_path)
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert "not validated (trainer.val_every=2)" in epochs[0]
    assert "val loss" in epochs[1] and "val loss" in epochs[2]  # epoch 2, and the last


def test_a_stop_after_an_unvalidated_epoch_validates_it_first_and_resumes(tmp_path, monkeypatch):
    due = fit_module.validation_due

    def stop_then_ask(cfg, epoch, stop):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as epoch 1's training ends
        return due(cfg, epoch, stop)

    run = TINY_RUN + ["trainer.epochs=4", "trainer.val_every=3"]
    monkeypatch.setattr(fit_module, "validation_due", stop_then_ask)
    with pytest.raises(TrainingStopped, match="epoch 2"):
        train(compose_config(run), tmp_path)
    monkeypatch.undo()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["best_epoch"] == 1
    assert load_file(tmp_path / "weights" / "best.safetensors")  # the stopped run has weights
    assert pd.read_csv(tmp_path / "metrics.csv")["val_acc"].notna().tolist() == [True]

    train(compose_config(run + [f"resume={tmp_path}"]), tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics.loc[metrics["val_acc"].notna(), "epoch"].tolist() == [1, 3, 4]
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 4


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "often"])
def test_a_val_every_that_is_not_a_whole_number_of_epochs_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match=r"trainer\.val_every"):
        train(compose_config(TINY_RUN + [f"trainer.val_every={value}"]), tmp_path)
    assert not (tmp_path / "metrics.csv").exists()
