"""Predictions as the user sees them: a line per image and the CSV that `inference.py --csv` and
the deploy predictor both write (columns path, top1, prob1, top2, prob2, ...)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploy.errors import ConfigError


@dataclass
class Prediction:
    path: Path
    classes: list[str]  # top-k, most likely first
    probabilities: list[float]


def top_k(path: Path, probabilities: np.ndarray, class_names: list[str], k: int) -> Prediction:
    """The ``k`` most likely classes of one image's probabilities (a 1-D array)."""
    order = np.argsort(-probabilities, kind="stable")[: min(k, len(probabilities))]
    return Prediction(
        path, [class_names[i] for i in order], [float(probabilities[i]) for i in order]
    )


def format_prediction(p: Prediction) -> str:
    ranked = ", ".join(f"{c} {prob:.1%}" for c, prob in zip(p.classes, p.probabilities))
    return f"{p.path}: {ranked}"


def check_csv_path(path: str) -> None:
    """--csv names a file that can be written; checked before any image is read."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(
            f"--csv {path} is a folder; give a file name, e.g. --csv {target / 'predictions.csv'}."
        )
    if not target.parent.is_dir():
        raise ConfigError(
            f"--csv {path}: the folder {target.parent} does not exist; create it first."
        )
    if target.exists() and target.suffix.lower() != ".csv":  # an image, model.json, model.onnx...
        raise ConfigError(
            f"--csv {path} is a file that is not a .csv, and writing there would replace it; "
            "name a .csv file (an existing .csv is replaced)."
        )


def write_csv(predictions: list[Prediction], path: str, topk: int) -> None:
    header = ["path"] + [f"{kind}{i}" for i in range(1, topk + 1) for kind in ("top", "prob")]
    try:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for p in predictions:
                ranked = [
                    v for c, prob in zip(p.classes, p.probabilities) for v in (c, f"{prob:.6f}")
                ]
                writer.writerow([str(p.path)] + ranked)
    except OSError as err:
        raise ConfigError(f"--csv {path} could not be written ({err.strerror or err}).") from None
    print(f"wrote {len(predictions)} predictions to {path}")


def predict_and_save(
    predict: Callable[[], list[Prediction]], csv_path: str | None, topk: int
) -> int:
    """A prediction command's work around ``predict`` (inference.py's and the deploy
    predictor's): --csv checked before any image is read, the predictions written there; its
    exit status is 1 when no image could be predicted."""
    if csv_path:
        check_csv_path(csv_path)
    predictions = predict()
    if csv_path:
        write_csv(predictions, csv_path, topk)
    return 0 if predictions else 1
