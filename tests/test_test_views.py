"""Test-time shifts (trainer.test_time_shift): the views are training's shifts, the final test
averages them, and inference and the report written again repeat that test."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

import inference
from src.data import load_dataset, preprocess
from src.data.transforms import BatchAugment, normalize
from src.model.views import CARD_KEY, ShiftedViews, card_test_views, with_test_views
from src.model.vit import VisionTransformer
from src.predict.hf_export import limitations
from src.predict.predictor import Predictor
from src.runs.catalogue import Run, load_model
from src.training.run import train
from tests.conftest import TINY_RUN, compose_config

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def small_model() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        image_size=16, patch_size=4, num_classes=5, embed_dim=32, depth=2, num_heads=2
    ).eval()


def test_views_are_the_shifts_training_draws_averaged_as_probabilities():
    """Each view is BatchAugment's zero-padded crop of the raw pixels at one (dy, dx) of the
    grid, normalised afterwards, as a training batch is: the border is black, not the mean."""
    model, shift = small_model(), 2
    pixels = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    crop = BatchAugment(crop_padding=shift)._random_crop
    expected = 0
    with torch.no_grad():
        for dy in range(2 * shift + 1):
            for dx in range(2 * shift + 1):
                offsets = torch.tensor([[dy] * 3, [dx] * 3])
                view = normalize(crop(pixels, offsets), MEAN, STD)
                expected = expected + model(view).softmax(dim=-1)
        averaged = ShiftedViews(model, shift, MEAN, STD)(normalize(pixels, MEAN, STD))
    torch.testing.assert_close(averaged.softmax(dim=-1), expected / 25, atol=1e-5, rtol=0)
    torch.testing.assert_close(averaged.exp().sum(dim=-1), torch.ones(3))  # log-probabilities


class Certain(torch.nn.Module):
    """Logits 200 apart: one view's probabilities of the other classes underflow to 0 in fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.mean(dim=(1, 2, 3)) * 0 + 200, x.mean(dim=(1, 2, 3)) * 0], dim=1)


def test_the_averaged_log_probabilities_stay_finite_where_probabilities_underflow():
    averaged = ShiftedViews(Certain(), 1, MEAN, STD)(torch.zeros(2, 3, 8, 8))
    torch.testing.assert_close(averaged, torch.tensor([[0.0, -200.0]] * 2))  # as one view gives
    loss = torch.nn.functional.cross_entropy(averaged, torch.tensor([1, 1]))
    assert loss.item() == pytest.approx(200.0)  # finite: the loss of a confident mistake


def test_no_shift_leaves_the_model_alone_and_views_keep_its_mode():
    model = small_model()
    assert with_test_views(model, 0, MEAN, STD) is model
    assert card_test_views(model, {"mean": MEAN, "std": STD}) is model  # a card from before it
    assert not with_test_views(model, 1, MEAN, STD).training  # an eval model's views are eval too


@pytest.fixture(scope="module")
def shifted_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("views") / "run"
    cfg = compose_config([*TINY_RUN, "trainer.test_time_shift=1", "logger=none"])
    train(cfg, folder)
    (folder / ".hydra").mkdir()
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")  # as train.py's Hydra writes it
    return Run.read(folder)


def test_the_final_test_averages_the_views_and_the_report_repeats_it(shifted_run, capsys):
    run = shifted_run
    assert run.card[CARD_KEY] == 1
    data = load_dataset(compose_config(TINY_RUN).dataset)
    inputs = preprocess(data.test.images, run.card["image_size"], run.card["mean"], run.card["std"])
    labels = data.test.labels
    model = load_model(run)
    with torch.no_grad():
        shifted, alone = card_test_views(model, run.card)(inputs), model(inputs)
    loss = torch.nn.functional.cross_entropy(shifted, labels).item()
    assert run.summary["test_loss"] == pytest.approx(loss, abs=1e-5)
    assert run.summary["test_acc"] == (shifted.argmax(1) == labels).sum().item() / len(labels)
    assert loss != pytest.approx(torch.nn.functional.cross_entropy(alone, labels).item())

    assert inference.main(["--run", str(run.path), "--report", "--device", "cpu"]) == 0
    said = f"test accuracy {run.summary['test_acc']:.2%}, loss {run.summary['test_loss']:.4f}"
    assert said in capsys.readouterr().out  # the report written again tests on the same views


def test_inference_predicts_with_the_views(shifted_run):
    predictor = Predictor(shifted_run)
    image = load_dataset(compose_config(TINY_RUN).dataset).test.images[0]
    with torch.no_grad():
        expected = card_test_views(predictor.model, predictor.card)(predictor.prepare(image))
    torch.testing.assert_close(predictor.probabilities(image), expected.exp()[0])


def test_the_model_card_says_its_test_accuracy_is_the_views(shifted_run):
    """The timm model reads one view: the card for the Hub says how to match the accuracy."""
    assert "averages 9 views of each image, moved by up to 1 px" in limitations(shifted_run)
