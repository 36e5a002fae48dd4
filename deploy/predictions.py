"""Predictions as the user sees them: a line per image and the CSV that `inference.py --csv` and
the deploy predictor both write (columns path, top1, prob1, top2, prob2, ...)."""

from __future__ import annotations

import csv
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
    return Prediction(path, [class_names[i] for i in order], [float(probabilities[i]) for i in order])


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
        raise ConfigError(f"--csv {path}: the folder {target.parent} does not exist; create it first.")


def write_csv(predictions: list[Prediction], path: str, topk: int) -> None:
    header = ["path"] + [f"{kind}{i}" for i in range(1, topk + 1) for kind in ("top", "prob")]
    try:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for p in predictions:
                ranked = [v for c, prob in zip(p.classes, p.probabilities) for v in (c, f"{prob:.6f}")]
                writer.writerow([str(p.path)] + ranked)
    except OSError as err:
        raise ConfigError(f"--csv {path} could not be written ({err.strerror or err}).") from None
    print(f"wrote {len(predictions)} predictions to {path}")
