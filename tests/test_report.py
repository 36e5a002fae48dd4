"""Per-class metrics and the ViT figures every run writes, and rebuilding them for a saved run."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import inference
from src.model.vit import VisionTransformer, attention_rollout
from src.report.metrics import (
    class_token_attention,
    confusion_matrix,
    per_class_metrics,
    position_similarity,
)
from src.training.run import train
from tests.conftest import FIGURES, TINY_RUN, WITH_FIGURES, compose_config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    train(compose_config([*TINY_RUN, WITH_FIGURES]), run_dir)
    return run_dir


def test_every_figure_is_written_as_a_png_and_to_tensorboard(tiny_run):
    assert {p.stem for p in (tiny_run / "plots").glob("*.png")} == FIGURES
    for name in FIGURES:
        with Image.open(tiny_run / "plots" / f"{name}.png") as image:
            assert image.format == "PNG" and min(image.size) >= 300
    events = EventAccumulator(str(tiny_run / "tensorboard")).Reload()
    assert set(events.Tags()["images"]) >= FIGURES
    assert {"test/macro_f1", "test/weighted_f1", "test_f1/0"} <= set(events.Tags()["scalars"])


def test_tensorboard_holds_the_same_pixels_as_each_png(tiny_run):
    # One drawing serves both (TensorBoard's add_figure would draw each figure again, at its own
    # size): the image in the event file is the PNG, pixel for pixel.
    events = EventAccumulator(str(tiny_run / "tensorboard"), size_guidance={"images": 0}).Reload()
    for name in FIGURES:
        (event,) = events.Images(name)
        with Image.open(tiny_run / "plots" / f"{name}.png") as png:
            logged = Image.open(io.BytesIO(event.encoded_image_string))
            assert (event.width, event.height) == png.size
            assert np.array_equal(np.asarray(logged.convert("RGB")), np.asarray(png.convert("RGB")))


def test_per_class_metrics_and_confusion_matrix_cover_the_test_split(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    test_size = summary["split_sizes"]["test"]
    table = pd.read_csv(tiny_run / "metrics_per_class.csv")
    assert table["class"].tolist() == [str(i) for i in range(10)] + ["macro avg", "weighted avg"]
    assert table["support"][:10].sum() == test_size
    assert table.iloc[-2]["f1"] == pytest.approx(summary["test_macro_f1"])
    matrix = pd.read_csv(tiny_run / "confusion_matrix.csv", index_col=0)
    assert matrix.to_numpy().sum() == test_size
    assert matrix.to_numpy().trace() / test_size == pytest.approx(summary["test_acc"])


def test_per_class_metrics_match_a_hand_count():
    labels = [0, 0, 1, 1, 1, 2]
    predicted = [0, 1, 1, 1, 0, 2]
    table = per_class_metrics(labels, predicted, ["a", "b", "c"]).set_index("class")
    assert table.loc["a", "precision"] == 0.5 and table.loc["b", "recall"] == pytest.approx(2 / 3)
    assert table.loc["c", "f1"] == 1.0 and table.loc["weighted avg", "support"] == 6


# scikit-learn warns of a single label even when it is given every class, as it is here
@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
def test_per_class_metrics_and_the_confusion_matrix_are_scikit_learns():
    """Worked out here from the confusion matrix (importing scikit-learn cost every run about
    1.3 s), with the numbers of precision_recall_fscore_support(zero_division=0), classes never
    predicted or never present included."""
    from sklearn import metrics

    rng = np.random.default_rng(0)
    for _ in range(200):
        classes = int(rng.integers(1, 12))
        labels = rng.integers(0, classes, int(rng.integers(1, 200)))
        noise = rng.integers(0, classes, len(labels))
        predicted = np.where(rng.random(len(labels)) < rng.random(), labels, noise)
        names = [f"c{i}" for i in range(classes)]
        table = per_class_metrics(labels, predicted, names).set_index("class")
        every = list(range(classes))
        expected = metrics.precision_recall_fscore_support(
            labels, predicted, labels=every, zero_division=0
        )
        for column, values in zip(("precision", "recall", "f1", "support"), expected):
            assert table[column].iloc[:classes].tolist() == pytest.approx(values.tolist())
        for average in ("macro", "weighted"):
            scores = metrics.precision_recall_fscore_support(
                labels, predicted, labels=every, average=average, zero_division=0
            )[:3]
            row = table.loc[f"{average} avg"]
            assert [row["precision"], row["recall"], row["f1"]] == pytest.approx(scores)
        assert np.array_equal(
            confusion_matrix(labels, predicted, classes),
            metrics.confusion_matrix(labels, predicted, labels=every),
        )


def test_rollout_rows_sum_to_one_and_a_position_is_its_own_best_match():
    model = VisionTransformer(
        image_size=16, patch_size=4, in_chans=1, num_classes=3, embed_dim=32, depth=3, num_heads=2
    ).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        rollout = attention_rollout(model.attention_maps(x))
        layers, from_class_token = class_token_attention(model, x)
    torch.testing.assert_close(rollout.sum(dim=-1), torch.ones(2, 17))
    assert layers.shape == (2, 3, 4, 4) and from_class_token.shape == (2, 4, 4)
    similarity = position_similarity(model.pos_embed.detach())
    assert similarity.shape == (16, 16)
    torch.testing.assert_close(similarity.diagonal(), torch.ones(16))
    assert (similarity <= 1 + 1e-6).all()


def test_visualize_false_keeps_only_the_light_outputs(tmp_path):
    train(compose_config(TINY_RUN + ["trainer.visualize=false"]), tmp_path)
    assert {p.stem for p in (tmp_path / "plots").glob("*.png")} == {"curves", "confusion_matrix"}
    assert (tmp_path / "metrics_per_class.csv").is_file()


def test_the_report_can_be_made_again_from_a_saved_run(tiny_run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    (copy / ".hydra").mkdir()
    (copy / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(compose_config(TINY_RUN)))
    shutil.rmtree(copy / "plots")
    (copy / "metrics_per_class.csv").unlink()
    before = json.loads((copy / "summary.json").read_text())

    assert inference.main(["--run", str(copy), "--report", "--device", "cpu"]) == 0
    assert {p.stem for p in (copy / "plots").glob("*.png")} == FIGURES
    assert (copy / "metrics_per_class.csv").read_text() == (
        tiny_run / "metrics_per_class.csv"
    ).read_text()
    after = json.loads((copy / "summary.json").read_text())
    assert after["test_acc"] == before["test_acc"] and after["status"] == "completed"
    assert "wrote:" in capsys.readouterr().out


def test_the_report_needs_the_runs_config(tiny_run, tmp_path, capsys):
    assert inference.main(["--run", str(tiny_run), "--report", "--device", "cpu"]) == 1
    assert "there is no .hydra/config.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_inference_report_gives_the_test_accuracy_in_summary_json(
    tmp_path, capsys, monkeypatch, precision
):
    """Issue 21: under bf16 the final test ran on bf16 logits, and inference.py in fp32, so
    `inference.py --report` could not reproduce summary.json's test numbers. The test now runs
    in fp32 whatever trainer.precision, as inference does."""
    cfg = compose_config(
        TINY_RUN + [f"trainer.precision={precision}", "trainer.epochs=1", "trainer.visualize=false"]
    )
    run_dir = tmp_path / "run"
    train(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["precision"] == ("bfloat16" if precision == "bf16" else "float32")

    rebuilt, real = [], inference.rebuild_report
    monkeypatch.setattr(
        inference, "rebuild_report", lambda *args: rebuilt.append(real(*args)) or rebuilt[-1]
    )
    assert inference.main(["--run", str(run_dir), "--report", "--device", "cpu"]) == 0
    _, stats = rebuilt[0]
    assert stats.acc == summary["test_acc"]
    assert stats.loss == pytest.approx(summary["test_loss"], rel=1e-6)
    acc, loss = f"{summary['test_acc']:.2%}", f"{summary['test_loss']:.4f}"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"test accuracy {acc}, loss {loss} on 270 images (summary.json: {acc}, loss {loss})"
    )


@pytest.mark.parametrize(
    ("position", "frozen", "title"),
    [("learned", "true", "learned"), ("sincos", "false", "fixed 2-D sin-cos")],
    ids=["linear-probe-of-learned", "sincos"],
)
def test_position_figures_are_titled_with_the_kind_the_model_was_built_with(
    tmp_path, monkeypatch, position, frozen, title
):
    """A linear probe freezes learned positions too; they are still titled learned."""
    import src.report.writer as writer

    kinds = []
    real = writer.plot_position_norms
    monkeypatch.setattr(
        writer, "plot_position_norms", lambda *args: kinds.append(args[-1]) or real(*args)
    )
    overrides = [f"model.pos_embed={position}", f"finetune.freeze_backbone={frozen}"]
    train(compose_config([*TINY_RUN, WITH_FIGURES, "trainer.epochs=1", *overrides]), tmp_path)
    assert kinds == [title]


def test_position_similarity_colours_span_the_data_and_the_colour_bar_says_so():
    """Sin-cos positions of the default 4x4 grid are 0.77 to 1 alike: on a -1..1 scale that is
    one colour, so the colours span the data, and the colour bar's label gives the span."""
    from src.model.vit import sincos_2d_position_embedding
    from src.report.plots import plot_position_similarity

    pos_embed = sincos_2d_position_embedding(4, 64)[None]
    similarity = position_similarity(torch.cat([torch.zeros(1, 1, 64), pos_embed], dim=1))
    fig = plot_position_similarity(similarity, 4, "fixed 2-D sin-cos")
    low, high = fig.axes[0].images[0].get_clim()
    assert (low, high) == pytest.approx((float(similarity.min()), 1.0)) and low > 0.5
    assert f"colours span {low:.2f} to 1.00 (of -1 to 1)" in fig.axes[-1].get_ylabel()


@pytest.mark.parametrize("epochs", [1, 2, 3, 7])
def test_curves_of_short_runs_have_whole_epoch_ticks(epochs):
    from src.report.plots import plot_curves

    metrics = pd.DataFrame(
        {
            "epoch": range(1, epochs + 1),
            "lr": [1e-3] * epochs,
            **{k: [0.5] * epochs for k in ("train_loss", "val_loss", "train_acc", "val_acc")},
        }
    )
    fig = plot_curves(metrics)
    fig.canvas.draw()
    for ax in fig.axes:
        left, right = ax.get_xlim()
        shown = [t for t in ax.get_xticks() if left <= t <= right]
        assert shown and all(float(t).is_integer() for t in shown), shown


def test_the_curves_add_accuracy_against_the_runs_time_where_metrics_have_it():
    """Runs from before run_seconds keep their three panels; a resumed one of them plots the
    epochs that have a time."""
    from src.report.plots import plot_curves

    metrics = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "lr": [1e-3] * 3,
            **{k: [0.5, 0.6, 0.7] for k in ("train_loss", "val_loss", "train_acc", "val_acc")},
        }
    )
    assert len(plot_curves(metrics).axes) == 3
    metrics["run_seconds"] = [None, 30.0, 45.0]  # epoch 1 was trained before the column
    timed = plot_curves(metrics).axes
    assert len(timed) == 4 and timed[3].get_title() == "Accuracy against time"
    (line,) = timed[3].get_lines()
    assert list(line.get_xdata()) == [30.0, 45.0] and list(line.get_ydata()) == [60.0, 70.0]
    assert timed[3].get_xlabel() == "time since the run started (s)"
