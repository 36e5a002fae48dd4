"""The Hugging Face-style export (issue 34, item 4): `inference.py --run RUN --export-hf DIR`
writes a folder that `timm.create_model("local-dir:DIR", pretrained=True)` loads into the run's
own model, with a model card written from the run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import inference
from src.predict.predictor import Predictor
from src.runs.catalogue import Run
from src.training.run import train
from tests.conftest import ROOT, TINY_RUN, compose_config

FIXTURE = ROOT / "tests" / "fixtures" / "run_before_rooms"  # class token, sin-cos positions


@pytest.fixture
def run(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture(scope="module")
def pooled_run(tmp_path_factory):
    """A run whose head reads the average of the patch tokens (timm's fc_norm), with learned
    positions."""
    folder = tmp_path_factory.mktemp("pooled") / "run"
    extra = ["trainer.epochs=1", "model.global_pool=avg", "model.pos_embed=learned"]
    train(compose_config(TINY_RUN + extra), folder)
    return folder


def exported(run_dir, out) -> None:
    assert inference.main(["--run", str(run_dir), "--export-hf", str(out)]) == 0


@pytest.mark.parametrize("which", ["token", "avg"])
def test_timm_loads_the_export_and_gives_the_runs_logits(which, run, pooled_run, tmp_path):
    run_dir = run if which == "token" else pooled_run
    out = tmp_path / "exported"
    exported(run_dir, out)
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    predictor = Predictor(Run.read(run_dir))
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)  # as digits are, 8x8 grey
    x = torch.cat([predictor.prepare(image) for image in images])  # (6, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), predictor.model(x), atol=1e-5, rtol=1e-5)
    card = predictor.card
    assert model.pretrained_cfg["label_names"] == card["class_names"]
    data = timm.data.resolve_data_config({}, model=model)
    assert data["input_size"] == (1, 16, 16)
    assert list(data["mean"]) == card["mean"] and list(data["std"]) == card["std"]


def test_timms_own_transforms_feed_the_model_the_workbenchs_input(run, tmp_path):
    """Whole image stretched to the square, bilinear, normalised: within one grey level (PIL
    rounds to 8 bits between its steps), small or large, square or not."""
    out = tmp_path / "exported"
    exported(run, out)
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    predictor = Predictor(Run.read(run))
    one_level = 1 / 255 / predictor.card["std"][0]
    rng = np.random.default_rng(0)
    for height, width in ((8, 8), (12, 20), (64, 48)):
        path = tmp_path / f"{height}x{width}.png"
        Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)).save(path)
        theirs = transform(Image.open(path).convert("L")).unsqueeze(0)
        ours = predictor.prepare(predictor.read(path))
        assert theirs.shape == ours.shape
        assert (theirs - ours).abs().max() <= 1.01 * one_level, (height, width)


def test_another_number_of_classes_keeps_every_weight_but_the_head(run, tmp_path):
    out = tmp_path / "exported"
    exported(run, out)
    model = timm.create_model(f"local-dir:{out}", pretrained=True, num_classes=3)
    whole = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert model.head.out_features == 3
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, whole.blocks[0].attn.qkv.weight)


def test_the_model_card_says_what_the_run_folder_says(run, tmp_path):
    warned = "scheduler.warmup_epochs=5 would take most of this 2-epoch run"  # as train.py logs
    with (run / "train.log").open("a") as log:
        log.write(f"[2026-12-06 04:26:35,100][train][WARNING] - {warned}\n")
    out = tmp_path / "exported"
    exported(run, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "curves.png",
        "model.safetensors",
    ]
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: timm\npipeline_tag: image-classification\n")
    summary = json.loads((run / "summary.json").read_text())
    assert f"Test accuracy: **{summary['test_acc']:.2%}** on 270 held-out images." in card
    assert "- splits: 1,257 train, 270 val, 270 test images (split seed 0)" in card
    assert "| learning rate | 0.001 |" in card and "| optimizer | `AdamW` |" in card
    command = "python train.py " + " ".join(summary["overrides"])
    assert f"```bash\n{command}\n```" in card
    assert f"(train.log):\n\n- {warned}\n" in card
    assert "| 3 | 0.106 | 1.000 | 0.192 | 28 |" in card  # metrics_per_class.csv's row
    assert "| *macro avg* | 0.011 | 0.100 | 0.019 | 270 |" in card
    assert "![Loss, accuracy and learning rate per epoch](curves.png)" in card
    assert (out / "curves.png").read_bytes() == (run / "plots" / "curves.png").read_bytes()
    assert "no better than chance (1 in 10)" in card  # 10.37% on 270 images
    assert f'timm.create_model("local-dir:{out}", pretrained=True)' in card


def test_a_run_without_its_curves_figure_gets_one_drawn_from_metrics_csv(run, tmp_path):
    (run / "plots" / "curves.png").unlink()
    out = tmp_path / "exported"
    exported(run, out)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](curves.png)" in (out / "README.md").read_text()


def test_export_hf_onto_a_file_is_one_sentence(run, tmp_path, capsys):
    target = tmp_path / "taken.txt"
    target.write_text("a file\n")
    assert inference.main(["--run", str(run), "--export-hf", str(target)]) == 1
    err = capsys.readouterr().err
    assert (
        err == f"error: --export-hf {target} is a file; give a folder (it is made when missing).\n"
    )
    assert target.read_text() == "a file\n"
