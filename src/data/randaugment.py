"""RandAugment (Cubuk et al., 2020) for a whole batch at once, each image with its own operations.

torchvision's ``RandAugment`` draws one operation for everything it is given, so a batch would be
augmented alike. Here each image draws its own operation (and sign) for each of ``num_ops``
rounds; the batch is sorted by what it drew, and each operation transforms its contiguous run of
images in one call. Magnitudes follow torchvision's ``RandAugment`` table (``magnitude`` out of
30 bins).

No operation makes the CPU wait for a GPU. The draws (one sorting order per round) reach the
device with the batch's other random numbers, and the run lengths stay on the CPU. torchvision's
geometric ops and a few of its colour ops build small tensors from Python numbers on every call (a
blocking copy to the GPU each time), so those are done here: the geometric ops as a gather through
a map of where each output pixel comes from, computed once per image size by torchvision's own
``affine``/``rotate`` (nearest neighbour, as RandAugment uses), so the result is torchvision's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

MAX_MAGNITUDE = 30


def _tv():
    """torchvision's functional transforms, imported by the first op that uses them (lazy: see
    src/data/__init__.py)."""
    import torchvision.transforms.v2.functional

    return torchvision.transforms.v2.functional


# (image, strength in [0, 1] with its sign) -> image; images are float (B, C, H, W) in [0, 1].
Op = Callable[[torch.Tensor, float], torch.Tensor]
# The same, with torchvision on one (1, H, W) image: only used to compute the pixel maps.
Geometry = Callable[[torch.Tensor, float], torch.Tensor]


def _shear(axis: int) -> Geometry:
    def op(x: torch.Tensor, s: float) -> torch.Tensor:
        degrees = math.degrees(math.atan(0.3 * s))
        shear = [degrees, 0.0] if axis == 0 else [0.0, degrees]
        return _tv().affine(x, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, fill=0.0)

    return op


def _translate(axis: int) -> Geometry:
    def op(x: torch.Tensor, s: float) -> torch.Tensor:
        size = x.shape[-1] if axis == 0 else x.shape[-2]
        pixels = int(150.0 / 331.0 * size * s)  # torchvision's share of the image, at any size
        shift = [pixels, 0] if axis == 0 else [0, pixels]
        return _tv().affine(x, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], fill=0.0)

    return op


GEOMETRY: dict[str, Geometry] = {
    "shear_x": _shear(0),
    "shear_y": _shear(1),
    "translate_x": _translate(0),
    "translate_y": _translate(1),
    "rotate": lambda x, s: _tv().rotate(x, 30.0 * s, fill=0.0),
}


def _sharpness(x: torch.Tensor, s: float) -> torch.Tensor:
    """torchvision's ``adjust_sharpness``: blend with a 3x3 blur (1s around a 5, over 13) that
    leaves the border pixels as they are."""
    channels = x.shape[1]
    kernel = torch.full((channels, 1, 3, 3), 1.0 / 13.0, dtype=x.dtype, device=x.device)
    kernel[:, :, 1, 1] = 5.0 / 13.0
    out = x.clone()
    inner = out[..., 1:-1, 1:-1]
    inner.add_(F.conv2d(x, kernel, groups=channels).sub_(inner), alpha=1.0 - (1.0 + 0.9 * s))
    return out.clamp_(0.0, 1.0)


def _autocontrast(x: torch.Tensor, s: float) -> torch.Tensor:
    """torchvision's ``autocontrast``: each channel stretched to [0, 1]; flat channels kept."""
    low = x.amin(dim=(-2, -1), keepdim=True)
    high = x.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    scale = torch.where(flat, torch.ones_like(high), high - low)
    return (x - torch.where(flat, torch.zeros_like(low), low)) / scale


COLOUR: dict[str, Op] = {
    "brightness": lambda x, s: _tv().adjust_brightness(x, 1.0 + 0.9 * s),
    "color": lambda x, s: _tv().adjust_saturation(x, 1.0 + 0.9 * s),  # a no-op on grey images
    "contrast": lambda x, s: _tv().adjust_contrast(x, 1.0 + 0.9 * s),
    "sharpness": _sharpness,
    "posterize": lambda x, s: _tv().posterize(x, 8 - round(4 * abs(s))),
    "solarize": lambda x, s: _tv().solarize(x, 1.0 - abs(s)),
    "autocontrast": _autocontrast,
    "equalize": lambda x, s: _tv().equalize(x),
}


def pixel_map(geometry: Geometry, strength: float, height: int, width: int) -> torch.Tensor:
    """(H * W,) int64: for each output pixel, 1 + the flat index of the input pixel it takes,
    or 0 where it falls outside the image. torchvision moves an image holding those indices
    (nearest neighbour keeps them exact), so the map is its transform, pixel for pixel."""
    index = torch.arange(1, height * width + 1, dtype=torch.float32).view(1, height, width)
    return geometry(index, strength).round().long().flatten()


def remap(x: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Each output pixel taken from the input pixel that ``pixels`` (a ``pixel_map``) names."""
    B, C, H, W = x.shape
    flat = F.pad(x.flatten(2), (1, 0))  # a zero "pixel 0" for what falls outside the image
    return flat[:, :, pixels].view(B, C, H, W)


def _geometric(name: str) -> Op:
    return lambda x, s: remap(x, pixel_map(GEOMETRY[name], s, *x.shape[-2:]).to(x.device))


# Every operation on a batch, as a plain function (BatchRandAugment keeps the pixel maps instead).
OPS: dict[str, Op] = {
    "identity": lambda x, s: x,
    **{name: _geometric(name) for name in GEOMETRY},
    **COLOUR,
}
NAMES = list(OPS)
SIGNED = {
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
}
# What an image can draw: an operation and, for the signed ones, a sign (True: negative).
VARIANTS: list[tuple[str, bool]] = [
    (name, negative)
    for name in NAMES
    for negative in ((False, True) if name in SIGNED else (False,))
]
# Per operation: its first variant's position in VARIANTS, and whether a sign picks the next one.
_FIRST_VARIANT = torch.tensor([VARIANTS.index((name, False)) for name in NAMES])
_IS_SIGNED = torch.tensor([name in SIGNED for name in NAMES])


class BatchRandAugment:
    """``num_ops`` random operations per image, at strength ``magnitude`` / 30."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9):
        self.num_ops = num_ops
        self.strength = magnitude / MAX_MAGNITUDE
        self._maps: dict[tuple, dict[tuple[str, bool], torch.Tensor]] = {}

    def draw(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, list[list[int]]]:
        """For each round, the order that sorts the batch by the variant each image drew
        ((num_ops, B), CPU) and how many images drew each variant (plain ints)."""
        orders, sizes = [], []
        for _ in range(self.num_ops):
            choice = torch.randint(len(NAMES), (batch,), generator=generator)
            negative = torch.rand(batch, generator=generator) < 0.5
            variant = _FIRST_VARIANT[choice] + (_IS_SIGNED[choice] & negative).long()
            orders.append(torch.argsort(variant, stable=True))
            sizes.append(torch.bincount(variant, minlength=len(VARIANTS)).tolist())
        return torch.stack(orders), sizes

    def apply(self, x: torch.Tensor, orders: torch.Tensor, sizes: list[list[int]]) -> torch.Tensor:
        """x: float (B, C, H, W) in [0, 1]; ``orders`` on x's device, ``sizes`` from ``draw``."""
        for order, counts in zip(orders, sizes):
            runs = x[order].split(counts)  # images sorted by variant, one run per variant
            done = torch.cat(
                [
                    self._transform(run, name, negative) if len(run) else run
                    for run, (name, negative) in zip(runs, VARIANTS)
                ]
            )
            x = torch.empty_like(done).index_copy_(0, order, done)  # back in batch order
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw and apply in one go (the draws moved to x's device here)."""
        orders, sizes = self.draw(x.shape[0], generator)
        return self.apply(x, orders.to(x.device), sizes)

    def _transform(self, x: torch.Tensor, name: str, negative: bool) -> torch.Tensor:
        s = -self.strength if negative else self.strength
        if name == "identity":
            return x
        if name in GEOMETRY:
            return remap(x, self._pixel_maps(*x.shape[-2:], x.device)[(name, negative)])
        return COLOUR[name](x, s).clamp_(0.0, 1.0)

    def _pixel_maps(self, height: int, width: int, device: torch.device):
        """Every geometric variant's map for this size, made and moved on first use only."""
        key = (height, width, str(device))
        if key not in self._maps:
            self._maps[key] = {
                (name, negative): pixel_map(
                    GEOMETRY[name], -self.strength if negative else self.strength, height, width
                ).to(device)
                for name, negative in VARIANTS
                if name in GEOMETRY
            }
        return self._maps[key]
