"""Predicting classes for image files with a saved run's model and preprocessing."""

from __future__ import annotations

from pathlib import Path

import torch

from deploy.images import image_paths, images_named  # noqa: F401  (re-exported for inference.py and the tests)
from deploy.predictions import Prediction, top_k
from src.data import preprocess
from src.data.images import read_image
from src.model.views import card_test_views
from src.model.vit import attention_rollout
from src.runs.catalogue import Run, load_model


class Predictor:
    """A run's model with its own preprocessing (image size, channels, normalisation)."""

    def __init__(self, run: Run, device: torch.device | str = "cpu"):
        self.run = run
        self.card = run.card
        self.device = torch.device(device)
        self.model = load_model(run, self.device)
        self.classifier = card_test_views(self.model, self.card)  # the final test's views

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (C, H, W) -> the model's normalised (1, C, S, S) input."""
        return preprocess(
            image.unsqueeze(0).to(self.device),
            self.card["image_size"],
            self.card["mean"],
            self.card["std"],
        )

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.prepare(image)).float().softmax(dim=-1)[0]

    def read(self, path: Path) -> torch.Tensor:
        return read_image(path, self.card["channels"])

    def predict(self, path: Path, topk: int = 3) -> Prediction:
        return self.predict_image(self.read(path), path, topk)

    def predict_image(self, image: torch.Tensor, path: Path, topk: int = 3) -> Prediction:
        """Top-k for an image already read (uint8 (C, H, W)); ``path`` only labels the result."""
        return top_k(path, self.probabilities(image).cpu().numpy(), self.card["class_names"], topk)

    @torch.no_grad()
    def attention_map(self, image: torch.Tensor) -> torch.Tensor:
        """The attention rollout of what the head reads (the class token) over the patch grid,
        (grid, grid)."""
        rollout = attention_rollout(self.model.attention_maps(self.prepare(image)))
        grid = self.model.patch_embed.grid_size
        return self.model.readout_attention(rollout)[0].reshape(grid, grid).cpu()
