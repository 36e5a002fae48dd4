"""RandAugment (Cubuk et al., 2020) for a whole batch at once, each image with its own operations.

torchvision's ``RandAugment`` draws one operation for everything it is given, so a batch would be
augmented alike. Here each image draws its own operation (and sign) for each of ``num_ops``
rounds; the images that drew the same one are transformed together, with torchvision's
functional ops, so a round costs at most one call per operation and sign. Magnitudes follow
torchvision's ``RandAugment`` table (``magnitude`` out of 30 bins).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torchvision.transforms.v2.functional as TF

MAX_MAGNITUDE = 30

# name -> (image, strength in [0, 1] with its sign) -> image; images are float in [0, 1].
Op = Callable[[torch.Tensor, float], torch.Tensor]


def _shear(axis: int) -> Op:
    def op(x: torch.Tensor, s: float) -> torch.Tensor:
        degrees = math.degrees(math.atan(0.3 * s))
        shear = [degrees, 0.0] if axis == 0 else [0.0, degrees]
        return TF.affine(x, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, fill=0.0)
    return op


def _translate(axis: int) -> Op:
    def op(x: torch.Tensor, s: float) -> torch.Tensor:
        size = x.shape[-1] if axis == 0 else x.shape[-2]
        pixels = int(150.0 / 331.0 * size * s)  # torchvision's share of the image, at any size
        shift = [pixels, 0] if axis == 0 else [0, pixels]
        return TF.affine(x, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], fill=0.0)
    return op


OPS: dict[str, Op] = {
    "identity": lambda x, s: x,
    "shear_x": _shear(0),
    "shear_y": _shear(1),
    "translate_x": _translate(0),
    "translate_y": _translate(1),
    "rotate": lambda x, s: TF.rotate(x, 30.0 * s, fill=0.0),
    "brightness": lambda x, s: TF.adjust_brightness(x, 1.0 + 0.9 * s),
    "color": lambda x, s: TF.adjust_saturation(x, 1.0 + 0.9 * s),  # a no-op on grey images
    "contrast": lambda x, s: TF.adjust_contrast(x, 1.0 + 0.9 * s),
    "sharpness": lambda x, s: TF.adjust_sharpness(x, 1.0 + 0.9 * s),
    "posterize": lambda x, s: TF.posterize(x, 8 - round(4 * abs(s))),
    "solarize": lambda x, s: TF.solarize(x, 1.0 - abs(s)),
    "autocontrast": lambda x, s: TF.autocontrast(x),
    "equalize": lambda x, s: TF.equalize(x),
}
SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
          "contrast", "sharpness"}


class BatchRandAugment:
    """``num_ops`` random operations per image, at strength ``magnitude`` / 30."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9):
        self.num_ops = num_ops
        self.strength = magnitude / MAX_MAGNITUDE
        self.names = list(OPS)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """x: float (B, C, H, W) in [0, 1]. The draws come from the CPU ``generator``, so no step
        waits for the GPU and the result is the same on any device."""
        B = x.shape[0]
        x = x.clone()  # written in place below; the caller's batch stays as it was
        for _ in range(self.num_ops):
            choice = torch.randint(len(self.names), (B,), generator=generator)
            negative = torch.rand(B, generator=generator) < 0.5
            for k, name in enumerate(self.names):
                signs = (False, True) if name in SIGNED else (None,)
                for sign in signs:
                    picked = choice == k if sign is None else (choice == k) & (negative == sign)
                    idx = picked.nonzero().flatten()
                    if idx.numel() == 0 or name == "identity":
                        continue
                    idx = idx.to(x.device)
                    s = -self.strength if sign else self.strength
                    x[idx] = OPS[name](x[idx], s).clamp_(0.0, 1.0)
        return x
