"""Predict with an exported run, without PyTorch (needs requirements-deploy.txt only).

    python -m deploy --run outputs/DATE/TIME --images "photos/*.jpg" --topk 3 [--csv out.csv]

--run is a run folder after `python inference.py --run RUN --export-onnx`, or any folder holding
its model.onnx and model.json. The output lines and the CSV columns are inference.py's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy.errors import ConfigError
from deploy.images import images_named
from deploy.predictions import Prediction, format_prediction, predict_and_save, top_k
from deploy.predictor import OnnxPredictor


def predict_images(
    predictor: OnnxPredictor, patterns: list[str], topk: int, batch_size: int
) -> list[Prediction]:
    """Predict every image that ``patterns`` name, ``batch_size`` at a time; a bad image is
    reported and skipped, as inference.py does."""
    predictions: list[Prediction] = []
    paths = images_named(patterns)
    for start in range(0, len(paths), batch_size):
        read, images = [], []
        for path in paths[start : start + batch_size]:
            try:
                images.append(predictor.read(path))
                read.append(path)
            except ConfigError as err:
                print(f"skipped {err}", file=sys.stderr)
        if not images:
            continue
        for path, probs in zip(read, predictor.probabilities(images)):
            prediction = top_k(path, probs, predictor.card["class_names"], topk)
            print(format_prediction(prediction), flush=True)
            predictions.append(prediction)
    return predictions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--run",
        required=True,
        help="a run folder with model.onnx, or a folder holding model.onnx and model.json",
    )
    parser.add_argument(
        "--images",
        required=True,
        nargs="+",
        metavar="IMAGES",
        help="images, folders of images, or globs such as 'photos/*.jpg'",
    )
    parser.add_argument("--topk", type=int, default=3, help="how many classes to show (default 3)")
    parser.add_argument("--csv", help="also write the predictions to this CSV file")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="images per onnxruntime call (default 32)"
    )
    args = parser.parse_args(argv)
    if args.topk < 1:
        parser.error("--topk must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def predict() -> list[Prediction]:  # called once --csv is checked
        predictor = OnnxPredictor(Path(args.run))
        return predict_images(predictor, args.images, args.topk, args.batch_size)

    try:
        return predict_and_save(predict, args.csv, args.topk)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
