"""Reading image files into uint8 tensors, the same way for training folders and for inference."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from src.errors import ConfigError

IMAGE_EXTENSIONS = {
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
}
# Refuse decompression bombs: anything over this many pixels is not a photo we want to decode.
Image.MAX_IMAGE_PIXELS = 64_000_000
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def is_grey_file(path: Path) -> bool:
    """Whether the file holds a greyscale image, from its header alone (cheap)."""
    with _decoding(path), Image.open(path) as image:
        return _is_grey(image)


def read_image(path: Path, channels: int) -> torch.Tensor:
    """uint8 (C, H, W): grey for 1 channel, RGB for 3; transparency is flattened onto white."""
    return decode_image(path, channels)[0]


def decode_image(path: Path, channels: int) -> tuple[torch.Tensor, bool]:
    """``read_image``, and whether the file itself was greyscale."""
    with _decoding(path), Image.open(path) as image:
        return to_tensor(image, channels), _is_grey(image)


def to_tensor(image: Image.Image, channels: int) -> torch.Tensor:
    """A PIL image of any mode -> uint8 (C, H, W), grey for 1 channel, RGB for 3."""
    array = np.asarray(_flatten(image, channels))
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _is_grey(image: Image.Image) -> bool:
    if image.mode == "P":  # a palette can hold colours or only greys
        palette = image.getpalette() or []
        return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette), 3))
    return image.mode in GREY_MODES


def _flatten(image: Image.Image, channels: int) -> Image.Image:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float greys: stretch to 8 bits
        values = np.asarray(image, dtype=np.float32)
        values = values * (255.0 / max(1.0, float(values.max())))
        image = Image.fromarray(values.clip(0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("L" if channels == 1 else "RGB")


@contextlib.contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Turns PIL's failures into one ConfigError sentence naming the file."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x the limit; refuse those images too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ConfigError(
            f"{path}: the image is too large to decode safely (over {Image.MAX_IMAGE_PIXELS:,} "
            "pixels); shrink it first."
        ) from None
    except UnidentifiedImageError:
        raise ConfigError(f"{path}: not an image PIL can read (or a corrupt one).") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated or malformed data
        raise ConfigError(f"{path}: the image could not be read ({err}).") from None
