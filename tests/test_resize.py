"""Progressive resizing (trainer.start_image_size): early epochs train on smaller images, growing
to model.image_size; validation and test see the full size; bad values get one sentence."""

from __future__ import annotations

import logging
import os
import signal

import pandas as pd
import pytest
import torch

import src.training.fit as fit_module
from src.errors import ConfigError
from src.model.vit import VisionTransformer, resize_position_embedding
from src.report.plots import plot_curves
from src.training.resize import ResizedBatches, epoch_image_size
from src.training.run import train
from src.training.stopping import TrainingStopped
from tests.conftest import TINY_RUN, compose_config


def sizes(overrides: list[str]) -> list[int]:
    cfg = compose_config(overrides)
    return [epoch_image_size(cfg, epoch) for epoch in range(1, cfg.trainer.epochs + 1)]


def test_the_size_grows_in_whole_patches_and_is_full_from_its_share_of_the_run():
    cifar = ["model.image_size=32", "model.patch_size=4", "trainer.epochs=27"]
    grown = sizes(cifar + ["trainer.start_image_size=16"])
    assert grown[0] == 16 and all(size % 4 == 0 for size in grown)
    assert grown == sorted(grown) and set(grown) == {16, 20, 24, 28, 32}
    assert grown.index(32) == round(0.75 * 27) - 1  # epoch 20 of 27 is the first at 32 px
    half = sizes(cifar + ["trainer.start_image_size=16", "trainer.full_size_at=0.5"])
    assert half.index(32) == round(0.5 * 27) - 1 and half[0] == 16
    assert sizes(cifar) == [32] * 27  # off by default


def test_the_model_takes_a_smaller_grid_with_its_position_embeddings_resized():
    torch.manual_seed(0)
    shape = dict(patch_size=4, num_classes=3, embed_dim=16, depth=1, num_heads=2)
    model = VisionTransformer(image_size=32, **shape)
    model.eval()
    small = torch.randn(2, 3, 16, 16)
    resized = resize_position_embedding(model.pos_embed.detach(), grid=4)
    same_at_16 = VisionTransformer(image_size=16, **shape)
    same_at_16.load_state_dict({**model.state_dict(), "pos_embed": resized})
    same_at_16.eval()
    torch.testing.assert_close(model(small), same_at_16(small))

    model(small).sum().backward()  # the small grid's gradient reaches the model's own positions
    assert model.pos_embed.grad is not None and model.pos_embed.grad[0, 1:].abs().sum() > 0
    assert model.position_embedding(64) is model.pos_embed  # the full size: its own, untouched


def test_resized_batches_keep_their_labels_and_count():
    batches = [(torch.rand(4, 1, 16, 16), torch.arange(4)) for _ in range(3)]
    resized = ResizedBatches(batches, 8)
    assert len(resized) == 3
    for (images, labels), (original, original_labels) in zip(resized, batches, strict=True):
        assert images.shape == (4, 1, 8, 8) and torch.equal(labels, original_labels)
        # antialiased 2x shrinking of a smooth image keeps its mean
        assert images.mean().item() == pytest.approx(original.mean().item(), abs=0.02)


def test_a_run_trains_at_the_scheduled_sizes_and_says_so(tmp_path, caplog):
    run = TINY_RUN + ["trainer.epochs=4", "trainer.start_image_size=8", "trainer.full_size_at=0.75"]
    with caplog.at_level(logging.INFO, logger="train"):
        train(compose_config(run), tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["train_image_size"].tolist() == [8, 12, 16, 16]  # the digits model: 16 px
    assert metrics["val_acc"].notna().all()
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert " acc " in epochs[0] and " at 8 px " in epochs[0] and " at 16 px " in epochs[3]
    accuracy_panel = plot_curves(metrics).axes[1]
    assert [text.get_text() for text in accuracy_panel.texts] == ["8 px", "12 px", "16 px"]


def test_a_resumed_run_trains_each_epoch_at_the_size_and_with_the_loss_of_an_unbroken_one(
    tmp_path, monkeypatch
):
    run = TINY_RUN + ["trainer.epochs=4", "trainer.start_image_size=8"]
    train(compose_config(run), tmp_path / "unbroken")
    due = fit_module.validation_due

    def stop_in_epoch_2(cfg, epoch, stop):
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as epoch 2's training ends
        return due(cfg, epoch, stop)

    monkeypatch.setattr(fit_module, "validation_due", stop_in_epoch_2)
    with pytest.raises(TrainingStopped):
        train(compose_config(run), tmp_path / "broken")
    monkeypatch.undo()
    assert len(pd.read_csv(tmp_path / "broken" / "metrics.csv")) == 2
    train(compose_config(run + [f"resume={tmp_path / 'broken'}"]), tmp_path / "broken")
    unbroken, resumed = (
        pd.read_csv(tmp_path / name / "metrics.csv") for name in ("unbroken", "broken")
    )
    assert resumed["train_image_size"].tolist() == unbroken["train_image_size"].tolist()
    pd.testing.assert_series_equal(resumed["train_loss"], unbroken["train_loss"])


@pytest.mark.parametrize(
    "override, setting",
    [
        ("trainer.start_image_size=6", "trainer.start_image_size"),  # not whole 4-px patches
        ("trainer.start_image_size=16", "trainer.start_image_size"),  # not below 16
        ("trainer.start_image_size=0", "trainer.start_image_size"),
        ("trainer.start_image_size=big", "trainer.start_image_size"),
        ("trainer.full_size_at=0", "trainer.full_size_at"),
        ("trainer.full_size_at=1.5", "trainer.full_size_at"),
    ],
)
def test_a_start_size_or_share_out_of_place_is_one_sentence(tmp_path, override, setting):
    with pytest.raises(ConfigError, match=rf"^{setting.replace('.', '[.]')}=") as refused:
        train(compose_config(TINY_RUN + [override]), tmp_path)
    assert "\n" not in str(refused.value) and str(refused.value).endswith(".")
    assert not (tmp_path / "metrics.csv").exists()
