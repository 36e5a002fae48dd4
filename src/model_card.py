"""The model a run trains, and model.json, its card: the architecture from the model config and
the data (channels, classes), and what inference needs to prepare an image for it. train.py
writes the card; src/runs.py rebuilds the model from it without the config."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from src.data import Dataset
from src.errors import ConfigError
from src.model import VisionTransformer, count_parameters


def model_kwargs(model_cfg: DictConfig, data: Dataset) -> dict:
    """VisionTransformer's arguments: the model config (less its name) plus what the data decides."""
    kwargs = OmegaConf.to_container(model_cfg, resolve=True)
    for key in ("name", "pretrained"):  # not the architecture's
        kwargs.pop(key, None)
    for key, value in (("in_chans", data.channels), ("num_classes", len(data.class_names))):
        if kwargs.get(key, value) != value:
            raise ConfigError(
                f"model.{key}={kwargs[key]} does not match the dataset, which has {value}; drop "
                f"the override: the model takes {key} from the data."
            )
    return {**kwargs, "in_chans": data.channels, "num_classes": len(data.class_names)}


def build_model(model_cfg: DictConfig, data: Dataset) -> VisionTransformer:
    return VisionTransformer(**model_kwargs(model_cfg, data))


def model_card(cfg: DictConfig, model: VisionTransformer, data: Dataset) -> dict:
    """model.json: enough to rebuild the model and preprocess an image, without the config."""
    return {
        "model_name": cfg.model.name,
        "model": model_kwargs(cfg.model, data),
        "dataset": data.name,
        "class_names": data.class_names,
        "image_size": cfg.model.image_size,
        "channels": data.channels,
        "mean": data.mean,
        "std": data.std,
        "num_params": count_parameters(model),
        "weights": "weights/best.safetensors",
    }
