"""Image files -> uint8 pixels, without torch: which files are images, and decoding any mode into
grey or RGB. The workbench (src/data/images.py) and the torch-free predictor both read images here,
so a file becomes the same pixels in training, in inference.py and on a server."""

from __future__ import annotations

import contextlib
import glob
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from deploy.errors import ConfigError

IMAGE_EXTENSIONS = {
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
}
# Refuse decompression bombs: anything over this many pixels is not a photo we want to decode.
Image.MAX_IMAGE_PIXELS = 64_000_000
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def image_paths(pattern: str) -> list[Path]:
    """An image file, a folder (its images, sorted), or a glob pattern."""
    path = Path(pattern).expanduser()
    if path.is_dir():
        found = [p for p in sorted(path.iterdir()) if is_image_file(p)]
        if not found:
            raise ConfigError(
                f"{pattern}: the folder has no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})."
            )
        return found
    if path.is_file():
        return [path]
    matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not matches:
        raise ConfigError(f"{pattern}: no such file, folder or matching files.")
    return matches


def images_named(patterns: list[str]) -> list[Path]:
    """The images of each of ``--images A B ...`` in turn (a glob the shell expanded gives many)."""
    return [path for pattern in patterns for path in image_paths(pattern)]


def is_grey_file(path: Path) -> bool:
    """Whether the file holds a greyscale image, from its header alone (cheap)."""
    with decoding(path), Image.open(path) as image:
        return is_grey(image)


def read_pixels(path: Path, channels: int) -> np.ndarray:
    """uint8 (H, W, C): grey for 1 channel, RGB for 3; transparency is flattened onto white."""
    return decode_pixels(path, channels)[0]


def decode_pixels(path: Path, channels: int) -> tuple[np.ndarray, bool]:
    """``read_pixels``, and whether the file itself was greyscale."""
    with decoding(path), Image.open(path) as image:
        return pixels(image, channels), is_grey(image)


def pixels(image: Image.Image, channels: int) -> np.ndarray:
    """A PIL image of any mode -> uint8 (H, W, C), grey for 1 channel, RGB for 3."""
    array = np.asarray(flatten(image, channels))
    return array[:, :, None] if array.ndim == 2 else array


def is_grey(image: Image.Image) -> bool:
    if image.mode == "P":  # a palette can hold colours or only greys
        palette = image.getpalette() or []
        return all(
            palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette), 3)
        )
    return image.mode in GREY_MODES


WIDE_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "F")  # 16-bit or float greys


def flatten(image: Image.Image, channels: int) -> Image.Image:
    """Any mode -> "L" (1 channel) or "RGB" (3)."""
    if image.mode in WIDE_GREY_MODES:  # stretched to 8 bits
        values = np.asarray(image, dtype=np.float32)
        values = values * (255.0 / max(1.0, float(values.max())))
        image = Image.fromarray(values.clip(0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("L" if channels == 1 else "RGB")


@contextlib.contextmanager
def decoding(path: Path) -> Iterator[None]:
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
