"""A decoded image -> the model's input, in numpy, as model.json describes it (image_size, mean,
std; channels are chosen when the file is decoded, in deploy/images.py).

Why this is not shared with the workbench: src/data/transforms.py prepares whole batches on the
training device with ``F.interpolate(mode="bilinear", antialias=True)``, and this predictor must
not import torch. Both use the same filter, PIL's antialiased triangle filter, which torch's
antialiased bilinear copies; tests/test_deploy.py checks on real images that the two give the same
input to 1e-6.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def prepare(pixels: np.ndarray, image_size: int, mean: list[float], std: list[float]) -> np.ndarray:
    """uint8 (H, W, C) -> normalised float32 (C, image_size, image_size)."""
    x = pixels.astype(np.float32).transpose(2, 0, 1) / np.float32(255)
    x = resize(x, image_size)
    mean_, std_ = (np.asarray(v, dtype=np.float32).reshape(-1, 1, 1) for v in (mean, std))
    return (x - mean_) / std_


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """float32 (C, H, W) -> (C, size, size): columns, then rows, each a matrix product."""
    height, width = x.shape[1:]
    if (height, width) == (size, size):
        return x
    x = x @ filter_weights(width, size).T  # (C, H, size)
    return filter_weights(height, size) @ x  # (C, size, size)


@lru_cache(maxsize=32)
def filter_weights(in_size: int, out_size: int) -> np.ndarray:
    """float32 (out_size, in_size): the weight of each input pixel in each output pixel.

    PIL's triangle filter, as torch's ``_upsample_bilinear2d_aa`` computes it (align_corners=False,
    in float32, so the weights are torch's to the bit): when shrinking, the filter widens to cover
    every input pixel under an output pixel; when growing it is plain bilinear. Weights that fall
    outside the image are dropped and the rest renormalised.
    """
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    support = max(scale, f32(1))  # the triangle's half-width, in input pixels
    weights = np.zeros((out_size, in_size), dtype=f32)
    for i in range(out_size):
        center = f32(scale * f32(i + 0.5))
        first = max(int(center - support + f32(0.5)), 0)
        last = min(int(center + support + f32(0.5)), in_size)
        distance = (np.arange(first, last, dtype=f32) - center + f32(0.5)) / support
        w = np.clip(f32(1) - np.abs(distance), f32(0), None)
        weights[i, first:last] = w / w.sum(dtype=f32)
    return weights
