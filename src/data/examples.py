"""Images to predict on: the first images of a dataset's test split, as PNG files named with
their true class (``3_004.png``: class 3, test image 4).

    python -m src.data.examples                                  # 10 digits into examples/digits/
    python -m src.data.examples dataset=mnist --count 8          # into examples/mnist/
    python -m src.data.examples dataset=folder dataset.root=dataset_path/pets --out my_examples

The dataset is chosen as for train.py (``dataset=NAME``, ``dataset.KEY=VALUE``) and read with
``list_dataset``, so the split is the one training holds out for its test (it depends on the
dataset's settings alone, ``dataset.split_seed`` among them, not on ``seed``): no run of that
dataset trained on these images. Image files are listed, and only the images written are decoded.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig
from PIL import Image

from src.data import FileSplit, list_dataset
from src.data.images import read_image
from src.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def first_test_split_images(
    cfg: DictConfig, count: int, channels: int | None = None
) -> list[tuple[torch.Tensor, str]]:
    """The first ``count`` images of the test split of the dataset ``cfg`` (a config's
    ``dataset``), uint8 (C, H, W), with their class names. Image files are decoded with
    ``channels`` (by default the dataset's)."""
    data = list_dataset(cfg)
    split, shown = data.test, range(min(count, len(data.test)))
    if isinstance(split, FileSplit):
        images = [read_image(split.files[i], channels or split.channels) for i in shown]
    else:
        images = [split.images[i] for i in shown]
    return [(image, data.class_names[split.labels[i]]) for i, image in zip(shown, images)]


def file_name(number: int, class_name: str) -> str:
    """``3_004.png`` for test image 4 of class 3; a class name's characters other than letters and
    digits become ``_`` (``7 - seven``: ``7_seven_001.png``)."""
    return f"{re.sub(r'[^A-Za-z0-9]+', '_', class_name).strip('_') or 'class'}_{number:03d}.png"


def write_examples(cfg: DictConfig, out: Path, count: int) -> list[Path]:
    """The first ``count`` test images of the dataset ``cfg`` as PNG files in ``out`` (made when
    missing); returns their paths."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder (it is made when missing).")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for number, (image, class_name) in enumerate(first_test_split_images(cfg, count), start=1):
        array = image.permute(1, 2, 0).numpy()
        path = out / file_name(number, class_name)
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
        written.append(path)
    return written


def compose_dataset(overrides: list[str]) -> DictConfig:
    """The ``dataset`` of train.py's config with these overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return compose(config_name="config", overrides=overrides).dataset
    except HydraException as err:
        first = str(err).split("Config search path")[0].strip().splitlines()[0]
        first = first.removeprefix("In 'config': ")
        if "Could not find 'dataset/" in first:
            names = sorted(p.stem for p in (CONFIGS / "dataset").glob("[!_]*.yaml"))
            first += f"; choose one of {', '.join(names)}"
        raise ConfigError(f"{' '.join(overrides)}: {first}.") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m src.data.examples",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "overrides", nargs="*", help="the dataset, as for train.py: dataset=mnist dataset.KEY=VALUE"
    )
    parser.add_argument("--out", help="the folder to write into (default examples/DATASET)")
    parser.add_argument("--count", type=int, default=10, help="how many images (default 10)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = compose_dataset(args.overrides)
        out = Path(args.out or f"examples/{cfg.name}")
        written = write_examples(cfg, out, args.count)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"wrote {len(written)} test images of {cfg.name} into {out}/: "
        + " ".join(p.name for p in written)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
