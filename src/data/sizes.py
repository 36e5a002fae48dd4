"""Where the data's image size meets the model's input.

Each dataset config names the size its images are held at (``dataset.image_size``: the native
size of fixed-size datasets, the model's input for those decoded from files of mixed sizes) and
the input the default model takes on it (``dataset.model_input``). The random crop shifts are a
share of the model's input, and a resize of more than 2x either way is said in one line.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from src.data.core import Split
from src.data.transforms import resize_uint8
from src.errors import ConfigError

RESIZE_NOTED_ABOVE = 2.0  # a resize by more than this factor, either way, gets a line in the log
CHUNK_BYTES = (
    64 * 2**20
)  # images converted at a time, so a conversion never copies a whole split in float


def crop_pixels(setting: int | str, fraction: float, image_size: int) -> int:
    """``augment.crop_padding``: a number of pixels of the model input, or 'auto' for the
    dataset's share of it (``dataset.augment.crop_fraction``), so the shifts keep their proportion
    at any size."""
    if setting == "auto":
        return round(fraction * image_size)
    return setting


def resize_note(dataset: DictConfig, model: DictConfig, data_size: int) -> str | None:
    """One sentence when the model's input is more than twice as large, or small, as the images."""
    model_size = int(model.image_size)
    factor = max(model_size, data_size) / min(model_size, data_size)
    if factor <= RESIZE_NOTED_ABOVE:
        return None
    way = "upsampled" if model_size > data_size else "downsampled"
    tokens = (model_size // int(model.patch_size)) ** 2
    suggested = dataset.model_input
    suggested_sizes = (suggested.get("image_size"), suggested.get("patch_size"))
    if suggested_sizes == (model_size, model.patch_size):
        return None  # the dataset's own suggestion is what runs: nothing better to say
    return (
        f"dataset={dataset.name} holds {data_size}x{data_size} images and model={model.name} takes "
        f"{model_size}x{model_size} ({tokens} patches of {model.patch_size}x{model.patch_size}), "
        f"so every image is {way} {factor:.1f}x; to train nearer the data's own size, set "
        f"model.image_size={suggested.image_size} model.patch_size={suggested.patch_size}."
    )


def check_size_and_channels(image_size, channels) -> None:
    """``dataset.image_size`` and ``dataset.channels`` of sources that take no 'auto'."""
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ConfigError(
            f"dataset.image_size={image_size} must be a whole number of pixels, e.g. 32."
        )
    if channels not in (1, 3):
        raise ConfigError(f"dataset.channels={channels} is not supported; use 1 (grey) or 3 (RGB).")


def fit_split(split: Split, image_size: int, channels: int) -> Split:
    """The split at ``image_size`` and in ``channels``, converted a chunk of images at a time
    (a split already so is returned as it is)."""
    n, c, h, w = split.images.shape
    if (c, h, w) == (channels, image_size, image_size):
        return split
    out = torch.empty((n, channels, image_size, image_size), dtype=torch.uint8)
    per_chunk = max(1, CHUNK_BYTES // (4 * max(c, channels) * max(h * w, image_size**2)))
    for start in range(0, n, per_chunk):
        chunk = _convert_channels(split.images[start : start + per_chunk], channels)
        out[start : start + per_chunk] = resize_uint8(chunk, image_size)
    return Split(out, split.labels)


def _convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if images.shape[1] == channels:
        return images
    if channels == 1:  # ITU-R 601-2 luma, as PIL's convert("L")
        from torchvision.transforms.v2.functional import rgb_to_grayscale  # (lazy: see src/data/)

        return rgb_to_grayscale(images)
    return images.expand(-1, 3, -1, -1)
