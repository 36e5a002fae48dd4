"""Predicting classes for image files with a saved run's model and preprocessing."""

from __future__ import annotations

import glob
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from src.data import preprocess
from src.errors import ConfigError
from src.model import attention_rollout
from src.runs import Run, load_model

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# Refuse decompression bombs: anything over this many pixels is not a photo we want to decode.
Image.MAX_IMAGE_PIXELS = 64_000_000


def image_paths(pattern: str) -> list[Path]:
    """An image file, a folder (its images, sorted), or a glob pattern."""
    path = Path(pattern).expanduser()
    if path.is_dir():
        found = [p for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not found:
            raise ConfigError(f"{pattern}: the folder has no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
        return found
    if path.is_file():
        return [path]
    matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not matches:
        raise ConfigError(f"{pattern}: no such file, folder or matching files.")
    return matches


def read_image(path: Path, channels: int) -> torch.Tensor:
    """uint8 (C, H, W) with the run's number of channels: grey for 1, RGB for 3."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x the limit; refuse those images too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ConfigError(
            f"{path}: the image is too large to decode safely (over {Image.MAX_IMAGE_PIXELS:,} "
            "pixels); shrink it first."
        ) from None
    except UnidentifiedImageError:
        raise ConfigError(f"{path}: not an image PIL can read (or a corrupt one).") from None
    except OSError as err:
        raise ConfigError(f"{path}: the image could not be read ({err}).") from None
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


@dataclass
class Prediction:
    path: Path
    classes: list[str]  # top-k, most likely first
    probabilities: list[float]


class Predictor:
    """A run's model with its own preprocessing (image size, channels, normalisation)."""

    def __init__(self, run: Run, device: torch.device | str = "cpu"):
        self.run = run
        self.card = run.card
        self.device = torch.device(device)
        self.model = load_model(run, self.device)

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (C, H, W) -> the model's normalised (1, C, S, S) input."""
        return preprocess(
            image.unsqueeze(0).to(self.device), self.card["image_size"], self.card["mean"], self.card["std"]
        )

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(self.prepare(image)).float().softmax(dim=-1)[0]

    def read(self, path: Path) -> torch.Tensor:
        return read_image(path, self.card["channels"])

    def predict(self, path: Path, topk: int = 3) -> Prediction:
        return self.predict_image(self.read(path), path, topk)

    def predict_image(self, image: torch.Tensor, path: Path, topk: int = 3) -> Prediction:
        """Top-k for an image already read (uint8 (C, H, W)); ``path`` only labels the result."""
        probs = self.probabilities(image)
        values, indices = probs.topk(min(topk, probs.numel()))
        names = self.card["class_names"]
        return Prediction(path, [names[i] for i in indices.tolist()], values.tolist())

    @torch.no_grad()
    def attention_map(self, image: torch.Tensor) -> torch.Tensor:
        """The class token's attention rollout over the patch grid, (grid, grid)."""
        rollout = attention_rollout(self.model.attention_maps(self.prepare(image)))
        grid = self.model.patch_embed.grid_size
        return rollout[0, 0, 1:].reshape(grid, grid).cpu()
