"""Reading image files of any mode into uint8 tensors, the same way for training folders and for
inference. The decoding itself is torch-free and shared with the deploy predictor
(deploy/images.py); this module only makes its pixels into (C, H, W) tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deploy.images import (  # noqa: F401  (re-exported: the workbench reads images from here)
    IMAGE_EXTENSIONS,
    decode_pixels,
    is_grey_file,
    is_image_file,
    pixels,
)


def read_image(path: Path, channels: int) -> torch.Tensor:
    """uint8 (C, H, W): grey for 1 channel, RGB for 3; transparency is flattened onto white."""
    return decode_image(path, channels)[0]


def decode_image(path: Path, channels: int) -> tuple[torch.Tensor, bool]:
    """``read_image``, and whether the file itself was greyscale."""
    array, grey = decode_pixels(path, channels)
    return _channels_first(array), grey


def to_tensor(image: Image.Image, channels: int) -> torch.Tensor:
    """A PIL image of any mode -> uint8 (C, H, W), grey for 1 channel, RGB for 3."""
    return _channels_first(pixels(image, channels))


def _channels_first(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.copy()).permute(2, 0, 1)
