"""Test-time shifts: a model's class probabilities averaged over its input moved by up to a few
pixels in each direction (``trainer.test_time_shift``).

A ViT cuts its input into patches on a fixed grid; the same image moved by a pixel is cut into
other patches, and the averaged views act like a small ensemble for the price of more forward
passes. The views are the shifts training draws from (``augment.crop_padding``): the image moved
within a frame of black pixels, so what comes into view is what training showed there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CARD_KEY = "test_time_shift"  # model.json's key; absent (runs before it) means one view


class ShiftedViews(nn.Module):
    """``model``'s class probabilities averaged over the (2 * shift + 1)^2 grid of shifts of each
    image, returned as their logarithms: a softmax of the output gives the averaged probabilities,
    its argmax the averaged prediction and cross-entropy their loss, as for any logits."""

    def __init__(self, model: nn.Module, shift: int, mean: list[float], std: list[float]):
        super().__init__()
        self.model, self.shift = model, shift
        # Black in the normalised input: the value training's zero padding takes once normalised.
        black = -torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)
        self.register_buffer("black", black.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, (height, width) = self.shift, x.shape[-2:]
        black = self.black.to(x.dtype)
        framed = F.pad(x - black, (s, s, s, s)) + black  # (B, C, H + 2s, W + 2s)
        # One view at a time (the memory of one forward pass, whatever their number), each kept
        # as log-probabilities: their log-mean-exp stays finite where a probability underflows.
        views = [
            self.model(framed[:, :, s + dy : s + dy + height, s + dx : s + dx + width])
            .float()
            .log_softmax(dim=-1)
            for dy in range(-s, s + 1)
            for dx in range(-s, s + 1)
        ]
        return torch.logsumexp(torch.stack(views), dim=0) - math.log(len(views))


def with_test_views(model: nn.Module, shift: int, mean: list[float], std: list[float]) -> nn.Module:
    """``model`` averaged over the shifts of up to ``shift`` pixels; ``model`` itself for 0."""
    if shift == 0:
        return model
    views = ShiftedViews(model, shift, mean, std).to(next(model.parameters()).device)
    return views.train(model.training)  # in the model's mode: an eval model stays one


def card_test_views(model: nn.Module, card: dict) -> nn.Module:
    """``model`` as its run's final test used it, from model.json: inference, the report written
    again and the exports give the same predictions as that test."""
    return with_test_views(model, int(card.get(CARD_KEY) or 0), card["mean"], card["std"])
