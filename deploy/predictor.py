"""An exported run, run by onnxruntime: images in, class probabilities out.

The folder is a run folder after `inference.py --export-onnx`, or any folder holding its
model.onnx and model.json. model.json is the one description of the preprocessing (image size,
channels, mean, std) and of the class names; nothing here imports torch or the workbench.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from deploy.errors import ConfigError, DamagedFile, last_line
from deploy.exported import CARD_FILE, ONNX_FILE, changed_files, damaged_weights, export_command
from deploy.files import read_json
from deploy.images import read_pixels
from deploy.preprocess import prepare

# What the predictor reads from model.json.
CARD_KEYS = ("class_names", "image_size", "channels", "mean", "std")


class OnnxPredictor:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ConfigError(
                f"--run {folder}: no such folder; give a run folder or a folder holding "
                f"{ONNX_FILE} and {CARD_FILE}."
            )
        self.card = read_card(self.folder)
        onnx_path = self.folder / ONNX_FILE
        if not onnx_path.is_file():
            raise ConfigError(
                f"{self.folder} has no {ONNX_FILE}; export the run first with "
                f"`{export_command(self.folder)}` (or copy its {ONNX_FILE} here)."
            )
        self.session = open_session(onnx_path)
        self.input_name = self.session.get_inputs()[0].name
        recorded = self.session.get_modelmeta().custom_metadata_map
        changed = changed_files(self.folder, recorded)
        damaged_weights(self.folder, changed)
        if changed:
            raise ConfigError(
                f"{onnx_path} was exported from another {' and '.join(changed)} than the one in "
                f"{self.folder} now; export it again with `{export_command(self.folder)}`."
            )

    def read(self, path: Path) -> np.ndarray:
        """uint8 (H, W, C) with the run's channels; a bad file raises one sentence naming it."""
        return read_pixels(path, self.card["channels"])

    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        """uint8 (H, W, C) images of any sizes -> (len(images), classes), each row summing to 1."""
        card = self.card
        batch = np.stack(
            [prepare(im, card["image_size"], card["mean"], card["std"]) for im in images]
        )
        logits = self.session.run(None, {self.input_name: batch})[0].astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def read_card(folder: Path) -> dict[str, Any]:
    path = folder / CARD_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing; copy the run's {CARD_FILE} beside its {ONNX_FILE}.")
    fix = f"copy the run's {CARD_FILE} beside its {ONNX_FILE} again"
    card = read_json(path, fix)
    missing = [key for key in CARD_KEYS if key not in card]
    if missing:
        raise DamagedFile(path, f"it has no {missing[0]}", fix)
    return card


def open_session(path: Path) -> ort.InferenceSession:
    """An onnxruntime session on the CPU; a file it cannot load is one sentence."""
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's load errors share no base class narrower than this
        what = f"not a model onnxruntime can load: {last_line(err)}"
        fix = f"export it again with `{export_command(path.parent)}`"
        raise DamagedFile(path, what, fix) from None
