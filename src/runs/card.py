"""model.json, the card of a run's model: enough to rebuild it (``catalogue.load_model``) and to
prepare an image for it, without the run's config."""

from __future__ import annotations

from omegaconf import DictConfig

from src.data import Dataset
from src.model.build import model_kwargs
from src.model.views import CARD_KEY
from src.model.vit import VisionTransformer, count_parameters


def model_card(cfg: DictConfig, model: VisionTransformer, data: Dataset) -> dict:
    """model.json: enough to rebuild the model and preprocess an image, without the config."""
    return {
        "model_name": cfg.model.name,
        "model": model_kwargs(cfg.model, data.channels, len(data.class_names)),
        "dataset": data.name,
        "class_names": data.class_names,
        "image_size": cfg.model.image_size,
        "channels": data.channels,
        "mean": data.mean,
        "std": data.std,
        "num_params": count_parameters(model),
        "weights": "weights/best.safetensors",
        # The final test's views, which inference repeats (src/model/views.py).
        CARD_KEY: cfg.trainer.get("test_time_shift", 0),
    }
