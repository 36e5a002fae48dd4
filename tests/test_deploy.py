"""Deploying a run: the ONNX export, its parity with PyTorch, and the torch-free predictor."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxscript", reason="the export needs requirements-export.txt")
ort = pytest.importorskip("onnxruntime", reason="the predictor needs requirements-deploy.txt")

import inference  # noqa: E402
from deploy.__main__ import main as deploy_main  # noqa: E402
from deploy.images import read_pixels  # noqa: E402
from deploy.preprocess import prepare  # noqa: E402
from src.data import load_dataset, preprocess  # noqa: E402
from src.data.images import read_image  # noqa: E402
from src.model.views import CARD_KEY, card_test_views  # noqa: E402
from src.predict import onnx_export as export  # noqa: E402
from src.runs.catalogue import Run, load_model  # noqa: E402
from src.training.run import train  # noqa: E402
from tests.conftest import ROOT, TINY_RUN, compose_config  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"
# The models of the parity test: the default (sin-cos positions, class token), average pooling,
# learned positions, and the default tested on 9 shifted views of each image (in the graph).
# Trained as little as TINY_RUN does, without figures or loggers.
MODELS = {
    "default": [],
    "avg": ["model.global_pool=avg"],
    "learned": ["model.pos_embed=learned"],
    "shifted": ["trainer.test_time_shift=1"],
}
QUIET = ["trainer.visualize=false", "logger=none"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs, exported (the default one through `inference.py --export-onnx`), the
    digits' test split, and PNGs of 12 test images with a note and a truncated PNG among them."""
    home = tmp_path_factory.mktemp("deploy")
    folders = {}
    for name, extra in MODELS.items():
        folders[name] = home / "outputs" / name
        train(compose_config(TINY_RUN + QUIET + extra), folders[name])
    log = io.StringIO()
    with redirect_stdout(log):
        assert inference.main(["--run", str(folders["default"]), "--export-onnx"]) == 0
    for name in ("avg", "learned", "shifted"):
        export.export_onnx(Run.read(folders[name]), log=lambda line: None)

    test_images = load_dataset(compose_config(TINY_RUN).dataset).test.images
    images = home / "images"
    images.mkdir()
    for i in range(12):  # PNG is lossless, so these are exactly the test-split pixels
        Image.fromarray(test_images[i, 0].numpy()).save(images / f"test_{i:02d}.png")
    (images / "zz_notes.png").write_text("this is not an image")
    good = (images / "test_00.png").read_bytes()
    (images / "zz_truncated.png").write_bytes(good[: len(good) // 2])
    return SimpleNamespace(
        home=home,
        folders=folders,
        export_log=log.getvalue(),
        test_images=test_images,
        images=images,
    )


def test_export_logs_its_steps_and_writes_a_dynamic_batch_model(runs):
    lines = runs.export_log.splitlines()
    default = runs.folders["default"]
    assert lines[0].startswith(f"exporting {default} with torch.onnx.export(dynamo=True)")
    assert lines[1].startswith("checked: onnxruntime's logits are PyTorch's within")
    assert lines[2].startswith(f"wrote {default / 'model.onnx'}") and "dynamic batch" in lines[2]
    assert lines[3] == f"predict without PyTorch: python -m deploy --run {default} --images IMAGES"
    session = ort.InferenceSession(str(default / "model.onnx"), providers=["CPUExecutionProvider"])
    [images] = session.get_inputs()
    assert (
        images.name == "images"
        and isinstance(images.shape[0], str)
        and images.shape[1:] == [1, 16, 16]
    )
    import onnx

    opset = {o.domain: o.version for o in onnx.load(str(default / "model.onnx")).opset_import}[""]
    assert opset >= 18, opset


@pytest.mark.parametrize("name", list(MODELS))
def test_onnxruntime_matches_pytorch_on_the_test_images(runs, name):
    run = Run.read(runs.folders[name])
    card = run.card
    assert card["model"]["global_pool"] == ("avg" if name == "avg" else "token")
    assert card["model"]["pos_embed"] == ("learned" if name == "learned" else "sincos")
    inputs = preprocess(runs.test_images, card["image_size"], card["mean"], card["std"])
    assert card.get(CARD_KEY, 0) == (1 if name == "shifted" else 0)
    with torch.no_grad():
        expected = card_test_views(load_model(run), card)(inputs).numpy()
    session = ort.InferenceSession(str(run.path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": inputs.numpy()})[0]  # all 270 test images in one batch
    assert got.shape == expected.shape == (270, 10)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert (got.argmax(1) == expected.argmax(1)).all()


@pytest.fixture(scope="module")
def real_images(tmp_path_factory):
    """A few real MNIST digits (PNG) and CIFAR-10 photos (JPEG) from ../shared/data."""
    if (
        not (SHARED_DATA / "MNIST" / "raw").is_dir()
        or not (SHARED_DATA / "cifar10-jpeg.tar.gz").is_file()
    ):
        pytest.skip("needs ../shared/data (MNIST and cifar10-jpeg.tar.gz)")
    folder = tmp_path_factory.mktemp("real")
    raw = np.fromfile(SHARED_DATA / "MNIST" / "raw" / "t10k-images-idx3-ubyte", dtype=np.uint8)
    for i, digit in enumerate(raw[16 : 16 + 4 * 784].reshape(4, 28, 28)):
        Image.fromarray(digit).save(folder / f"mnist_{i}.png")
    with tarfile.open(SHARED_DATA / "cifar10-jpeg.tar.gz") as tar:
        photos = (m for m in tar if m.name.endswith(".jpg"))
        for i, member in zip(range(4), photos):
            (folder / f"cifar_{i}.jpg").write_bytes(tar.extractfile(member).read())
    return sorted(folder.iterdir())


@pytest.mark.parametrize("size", [16, 28, 32, 45])  # smaller, each one's own size, larger
@pytest.mark.parametrize("channels", [1, 3])
def test_numpy_preprocessing_equals_the_workbench_on_real_images(real_images, size, channels):
    mean, std = [0.49, 0.48, 0.45][:channels], [0.25, 0.24, 0.26][:channels]
    for path in real_images:
        ours = prepare(read_pixels(path, channels), size, mean, std)
        workbench = preprocess(read_image(path, channels)[None], size, mean, std)[0].numpy()
        assert ours.dtype == np.float32 and ours.shape == workbench.shape == (channels, size, size)
        np.testing.assert_allclose(ours, workbench, atol=1e-5, rtol=0, err_msg=str(path))


def write_blockers(folder: Path) -> None:
    """Packages named torch and src that fail on import, to stand first on the PYTHONPATH."""
    for name in ("torch", "src"):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked: the deploy predictor must run without it')\n"
        )


def test_predictor_runs_without_torch_and_writes_inference_csv(runs, real_images, tmp_path):
    # A server: the deploy/ folder, a run's model.onnx and model.json, and no torch or src/.
    server = tmp_path / "server"
    shutil.copytree(
        ROOT / "deploy", server / "deploy", ignore=shutil.ignore_patterns("__pycache__")
    )
    (server / "model").mkdir()
    for name in ("model.onnx", "model.json"):
        shutil.copy(runs.folders["default"] / name, server / "model" / name)
    write_blockers(tmp_path / "blockers")
    images = tmp_path / "images"
    shutil.copytree(runs.images, images)
    for path in real_images:  # colour photos and other sizes too: made grey and resized alike
        shutil.copy(path, images)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "blockers")}
    blocked = subprocess.run(
        [sys.executable, "-c", "import torch"], cwd=server, env=env, capture_output=True, text=True
    )
    assert blocked.returncode == 1 and "torch is blocked" in blocked.stderr

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deploy",
            "--run",
            "model",
            "--images",
            str(images / "test_00.png"),
            str(images),
            "--topk",
            "3",  # several, as a glob the shell expanded gives them
            "--csv",
            str(tmp_path / "onnx.csv"),
            "--batch-size",
            "5",
        ],
        cwd=server,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr

    printed, warned = io.StringIO(), io.StringIO()
    with redirect_stdout(printed), redirect_stderr(warned):
        assert (
            inference.main(
                [
                    "--run",
                    str(runs.folders["default"]),
                    "--images",
                    str(images / "test_00.png"),
                    str(images),
                    "--topk",
                    "3",
                    "--csv",
                    str(tmp_path / "torch.csv"),
                ]
            )
            == 0
        )
    # The same bad files skipped with the same sentences, the same images predicted in order.
    assert result.stderr.splitlines() == warned.getvalue().splitlines()
    assert [line for line in result.stderr.splitlines() if "zz_" in line] == [
        f"skipped {images / 'zz_notes.png'}: not an image PIL can read (or a corrupt one).",
        f"skipped {images / 'zz_truncated.png'}: "
        "the image could not be read (image file is truncated).",
    ]

    def labels(out: str) -> list[str]:
        return [line.split(": ")[0] for line in out.splitlines() if ": " in line]

    assert labels(result.stdout) == labels(printed.getvalue())

    ours = list(csv.DictReader((tmp_path / "onnx.csv").open()))
    theirs = list(csv.DictReader((tmp_path / "torch.csv").open()))
    assert len(ours) == len(theirs) == 1 + 12 + len(real_images)
    assert (
        list(ours[0])
        == ["path", "top1", "prob1", "top2", "prob2", "top3", "prob3"]
        == list(theirs[0])
    )
    for mine, reference in zip(ours, theirs):
        assert [mine[k] for k in ("path", "top1", "top2", "top3")] == [
            reference[k] for k in ("path", "top1", "top2", "top3")
        ]
        for k in ("prob1", "prob2", "prob3"):
            assert float(mine[k]) == pytest.approx(float(reference[k]), abs=2e-6)


def copy_run_files(source: Path, target: Path, *names: str) -> Path:
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name, target / name)
    return target


WEIGHTS = "weights/best.safetensors"


def no_export(runs, folder):
    return copy_run_files(runs.folders["default"], folder, "model.json", WEIGHTS)


def renamed_classes(runs, folder):
    copy_run_files(runs.folders["default"], folder, "model.onnx", "model.json")
    card = json.loads((folder / "model.json").read_text())
    card["class_names"] = card["class_names"][::-1]
    (folder / "model.json").write_text(json.dumps(card))
    return folder


def other_weights(runs, folder):
    copy_run_files(runs.folders["default"], folder, "model.onnx", "model.json")
    return copy_run_files(runs.folders["avg"], folder, WEIGHTS)  # a run trained further, say


def truncated_onnx(runs, folder):
    copy_run_files(runs.folders["default"], folder, "model.onnx", "model.json")
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 2])
    return folder


def no_model_json(runs, folder):
    return copy_run_files(runs.folders["default"], folder, "model.onnx")


@pytest.mark.parametrize(
    "make, sentence",
    [
        (
            no_export,
            (
                "{folder} has no model.onnx; export the run first with "
                "`python inference.py --run {folder} --export-onnx` (or copy its model.onnx here)."
            ),
        ),
        (
            renamed_classes,
            (
                "{folder}/model.onnx was exported from another model.json than the one in "
                "{folder} now; export it again with "
                "`python inference.py --run {folder} --export-onnx`."
            ),
        ),
        (
            other_weights,
            "{folder}/model.onnx was exported from another weights/best.safetensors than",
        ),
        (
            truncated_onnx,
            "{folder}/model.onnx is damaged (not a model onnxruntime can load: ",
        ),
        (
            no_model_json,
            "{folder}/model.json is missing; copy the run's model.json beside its model.onnx.",
        ),
    ],
    ids=["no_export", "renamed_classes", "other_weights", "truncated_onnx", "no_model_json"],
)
def test_bad_exports_are_refused_with_one_sentence(runs, tmp_path, capsys, make, sentence):
    folder = make(runs, tmp_path / "run")
    assert deploy_main(["--run", str(folder), "--images", str(runs.images)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: " + sentence.format(folder=folder))
    assert err.count("\n") == 1


def test_a_wrong_export_never_takes_the_place_of_the_file(runs, monkeypatch):
    run = Run.read(runs.folders["learned"])
    before = (run.path / "model.onnx").read_bytes()
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no export can pass: the check must refuse it
    with pytest.raises(RuntimeError, match="logits differ from PyTorch's .* it was not written"):
        export.export_onnx(run, log=lambda line: None)
    assert (run.path / "model.onnx").read_bytes() == before
    assert [p.name for p in run.path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_export_onnx_goes_with_run_alone(capsys):
    for argv in (["--export-onnx"], ["--run", "latest", "--images", "x.png", "--export-onnx"]):
        with pytest.raises(SystemExit) as exit_:
            inference.parse_args(argv)
        assert exit_.value.code == 2
        assert "--export-onnx go with --run alone" in capsys.readouterr().err
