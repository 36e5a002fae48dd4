"""What the web page shows, computed without Gradio, so the tests call it directly: the folders
searched for runs, the runs table and the run picker's choices, a run's summary, curves, per-class
metrics, figures and first test images, and the ``Workbench``, which holds the model of the run in
use and turns an upload or a test image into a ``Shown``: a sentence, the top-k classes, the input
and its attention rollout. The page's layout over these (Gradio) is src/web/page.py's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib import colormaps

from src.contract import RunPaths
from src.data.examples import first_test_split_images
from src.errors import ConfigError, DamagedFile
from src.fileio import read_csv
from src.predict.predictor import Predictor
from src.predict.rebuild import run_config
from src.runs.catalogue import RUN_ROOTS, Run, find_runs, runs_frame
from src.runs.folder import read_metrics

MB = 1024 * 1024  # as Gradio counts in its upload-limit message, so both limits agree
EXAMPLES = 12  # test images offered for a quick try
SHOWN_AT_LEAST = 192  # smaller images are enlarged, pixel by pixel, to this many pixels on the page


def run_roots(folders: list[str] | None) -> list[Path]:
    """The folders to search for runs: those given, each of which must exist, else the default
    outputs/ and multirun/ (those of them that exist)."""
    if folders:
        for folder in folders:
            if not Path(folder).is_dir():
                raise ConfigError(
                    f"--runs {folder}: no such folder; give the folder that holds your runs "
                    "(by default outputs and multirun)."
                )
        return [Path(f) for f in folders]
    found = [Path(root) for root in RUN_ROOTS if Path(root).is_dir()]
    if not found:
        raise ConfigError(
            "there is no outputs/ or multirun/ folder here; start app.py in the project folder, "
            "or give --runs FOLDER."
        )
    return found


# The runs table's columns on the page and their shares of its width: every column fits at 1,400
# pixels (and narrower), long overrides and folders wrapping onto more lines.
PAGE_COLUMNS = {
    "#": "3%",
    "when": "9%",
    "dataset": "8%",
    "model": "8%",
    "overrides": "24%",
    "epochs": "6%",
    "best val %": "6%",
    "test %": "5%",
    "status": "11%",
    "folder": "20%",
}


def runs_for_page(runs: list[Run]) -> pd.DataFrame:
    """`inference.py --list`'s table, with accuracies as numbers in percent so that they sort."""
    frame = runs_frame(runs)
    frame[["best val", "test"]] = (frame[["best val", "test"]] * 100).round(2)
    return frame.rename(columns={"best val": "best val %", "test": "test %"})


def default_run(runs: list[Run]) -> Run | None:
    """The newest completed run with weights, else the newest usable one (what Enter picks in
    `inference.py`)."""
    return next((r for r in runs if r.ready), next((r for r in runs if r.usable), None))


def run_choices(runs: list[Run]) -> list[tuple[str, str]]:
    """(label, folder) of every run that can predict, for the run picker; numbered as the table."""
    choices = []
    for number, run in enumerate(runs, start=1):
        if run.usable:
            what = f"{run.summary.get('model', '?')} on {run.summary.get('dataset', '?')}"
            choices.append((f"#{number} {run.path} ({what}, {run.status})", str(run.path)))
    return choices


def run_summary(run: Run) -> str:
    """A paragraph of Markdown about the run, from its summary.json."""
    s = run.summary
    what = f"{s.get('model', '?')} on {s.get('dataset', '?')}"
    parts = [f"**{run.path}**: {what}, {run.status} after {s.get('epochs_completed', 0)} epochs"]
    if "best_val_acc" in s:
        parts.append(
            f"best validation accuracy {s['best_val_acc']:.2%} (epoch {s.get('best_epoch', '?')})"
        )
    if "test_acc" in s:
        parts.append(f"test accuracy {s['test_acc']:.2%}")
    if "num_params" in s:
        parts.append(f"{s['num_params']:,} parameters")
    if "train_seconds" in s:
        parts.append(f"trained in {s['train_seconds']:.0f} s on {s.get('device', '?')}")
    if s.get("overrides"):
        parts.append("overrides `" + " ".join(s["overrides"]) + "`")
    if run.problem:
        parts.append(f"cannot predict ({run.problem})")
    return " ".join(["; ".join(parts) + ".", *damage_notes(run)])


def damage_notes(run: Run) -> list[str]:
    """A sentence for each damaged file of those the page reads of the run (summary.json,
    model.json, metrics.csv, metrics_per_class.csv), naming it and what to do."""
    notes = [str(err) for err in run.damaged]
    for read in (metrics_table, per_class_table):
        try:
            read(run)
        except DamagedFile as err:
            notes.append(str(err))
        except OSError:
            pass
    return notes


def metrics_table(run: Run) -> pd.DataFrame | None:
    """metrics.csv, None before the first epoch ends; DamagedFile when it is damaged."""
    return read_metrics(run.path)


def per_class_table(run: Run) -> pd.DataFrame | None:
    """metrics_per_class.csv, None before the run has tested; DamagedFile when it is damaged."""
    path = run.path / "metrics_per_class.csv"
    fix = f"write it again with: python inference.py --run {run.path} --report"
    return read_csv(path, fix, "class") if path.is_file() else None


def curves(run: Run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """metrics.csv as two long tables for line plots, loss and accuracy (%):
    epoch, split (train or validation), value. Empty when the run has no metrics yet, or they are
    damaged (``damage_notes`` says so)."""
    empty = pd.DataFrame({"epoch": [], "split": [], "value": []})
    try:
        metrics = metrics_table(run)
    except (OSError, DamagedFile):
        metrics = None
    if metrics is None:
        return empty, empty
    tables = []
    for name, scale in (("loss", 1), ("acc", 100)):
        columns = {f"train_{name}": "train", f"val_{name}": "validation"}
        if not set(columns) <= set(metrics.columns):
            tables.append(empty)
            continue
        long = metrics.melt(id_vars="epoch", value_vars=list(columns), var_name="split")
        long = long.dropna(subset=["value"])  # epochs that trainer.val_every did not validate
        long["split"] = long["split"].map(columns)
        long["value"] = long["value"] * scale
        tables.append(long)
    return tables[0], tables[1]


def per_class(run: Run) -> pd.DataFrame:
    """metrics_per_class.csv, rounded for reading; empty when the run has none (or it is damaged:
    ``damage_notes`` says so)."""
    try:
        table = per_class_table(run)
    except (OSError, DamagedFile):
        table = None
    if table is None:
        return pd.DataFrame({"class": [], "precision": [], "recall": [], "f1": [], "support": []})
    return table.round(4)


def figures(run: Run) -> list[tuple[str, str]]:
    """(path, caption) of every figure in the run's plots/ folder, by name."""
    return [
        (str(p), p.stem.replace("_", " ")) for p in sorted(RunPaths(run.path).plots.glob("*.png"))
    ]


def first_test_images(run: Run, count: int = EXAMPLES) -> list[tuple[torch.Tensor, str]]:
    """The first ``count`` images of the run's test split, uint8 (C, H, W), with their true
    classes (the images ``python -m src.data.examples`` writes). The run's .hydra/config.yaml says
    which data and split it used; image files are listed and only the ``count`` shown are decoded,
    with the model's channels."""
    channels = run.card["channels"] if run.card else None
    return first_test_split_images(run_config(run).dataset, count, channels)


def pixels(image: torch.Tensor) -> np.ndarray:
    """uint8 (C, H, W) -> (H, W) grey or (H, W, 3) colour, as images are shown."""
    array = image.permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def attention_overlay(
    image: torch.Tensor, heatmap: torch.Tensor, alpha: float = 0.55
) -> np.ndarray:
    """The image (uint8 (C, H, W)) under its attention map ((grid, grid), any scale), stretched
    over the image and coloured with inferno, as in `inference.py --attention`: (H, W, 3) uint8."""
    height, width = image.shape[-2:]
    heat = F.interpolate(
        heatmap[None, None].float(), size=(height, width), mode="bilinear", align_corners=False
    )[0, 0]
    heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)
    colour = torch.from_numpy(colormaps["inferno"](heat.numpy())[..., :3]).float()
    base = image.float().div(255).expand(3, -1, -1).permute(1, 2, 0)  # grey -> three equal channels
    return ((1 - alpha) * base + alpha * colour).mul(255).round().to(torch.uint8).numpy()


def enlarged(array: np.ndarray, at_least: int = SHOWN_AT_LEAST) -> np.ndarray:
    """A small image repeated pixel by pixel until its longer side has ``at_least`` pixels, so the
    browser shows it sharp instead of blurred; larger images are returned as they are."""
    factor = -(-at_least // max(array.shape[:2]))  # ceiling division
    return array.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else array


@dataclass
class Shown:
    """What the page shows for one try: a sentence, and when it worked, the prediction."""

    message: str
    top: dict[str, float] | None = None  # the top-k classes and their probabilities
    image: np.ndarray | None = None  # the input as the model read it (its channels, its size)
    overlay: np.ndarray | None = None  # (H, W, 3): the input under its attention rollout


class Workbench:
    """The runs under ``roots``; the model of the run in use, and the test images of the runs
    looked at so far."""

    def __init__(
        self, roots: list[Path], max_upload_mb: float = 10, device: str | torch.device = "cpu"
    ):
        self.roots = roots
        self.max_upload_mb = max_upload_mb
        self.device = device
        self._loaded: tuple[tuple[str, int] | None, Predictor | None] = (None, None)
        self._examples: dict[str, list[tuple[torch.Tensor, str]]] = {}
        self._lock = threading.Lock()  # Gradio calls from several threads

    def runs(self) -> list[Run]:
        return find_runs(self.roots)

    def predictor(self, folder: str | None) -> Predictor:
        if not folder:
            raise ConfigError(
                f"There is no run to predict with under {' or '.join(map(str, self.roots))}; "
                "train one with `python train.py`, then reload the page."
            )
        run = Run.read(folder)
        # One model at a time, loaded again when other weights are asked for or these changed
        # (a run still training saves better weights as it goes).
        key = (folder, run.weights_path.stat().st_mtime_ns) if run.usable else None
        with self._lock:
            if key is None or key != self._loaded[0]:
                self._loaded = (key, Predictor(run, self.device))  # says why an unusable run can't
            return self._loaded[1]

    def examples(self, folder: str) -> list[tuple[torch.Tensor, str]]:
        with self._lock:
            if folder not in self._examples:
                self._examples[folder] = first_test_images(Run.read(folder))
            return self._examples[folder]

    def predict_file(self, folder: str | None, path: str | None, topk: int) -> Shown:
        """An uploaded file: refused with a sentence when it is missing, too large or no image."""
        try:
            if not path:
                raise ConfigError("Upload an image first.")
            name, size = Path(path).name, Path(path).stat().st_size
            if size > self.max_upload_mb * MB:
                raise ConfigError(
                    f"{name} is {size / MB:.1f} MB, over the {self.max_upload_mb:g} MB limit; "
                    "upload a smaller image (or start the page with a larger --max-upload-mb)."
                )
            predictor = self.predictor(folder)
            try:
                image = predictor.read(Path(path))
            except ConfigError as err:  # name the upload, not the server's copy of it
                raise ConfigError(str(err).replace(str(path), name)) from None
            return self.predict(predictor, image, name, topk)
        except ConfigError as err:
            return Shown(str(err))

    def predict_example(self, folder: str | None, index: int, topk: int) -> Shown:
        """The run's test image number ``index``."""
        try:
            predictor = self.predictor(folder)
            image, label = self.examples(folder)[index]
            name = f"test image {index + 1} (true class {label})"
            return self.predict(predictor, image, name, topk)
        except ConfigError as err:
            return Shown(str(err))

    @staticmethod
    def predict(predictor: Predictor, image: torch.Tensor, name: str, topk: int) -> Shown:
        prediction = predictor.predict_image(image, Path(name), topk)
        top = dict(zip(prediction.classes, prediction.probabilities))
        overlay = attention_overlay(image, predictor.attention_map(image))
        best, probability = prediction.classes[0], prediction.probabilities[0]
        return Shown(
            f"{name}: **{best}** ({probability:.1%}), by {predictor.run.path}.",
            top,
            pixels(image),
            overlay,
        )
