"""A model from its config: the architecture from ``cfg.model``, the input channels and the number
of classes from the data it will see."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError
from src.model.vit import VisionTransformer


def model_kwargs(model_cfg: DictConfig, channels: int, num_classes: int) -> dict:
    """VisionTransformer's arguments: the model config (less its name) and what the data decides."""
    kwargs = OmegaConf.to_container(model_cfg, resolve=True)
    for key in ("name", "pretrained"):  # not the architecture's
        kwargs.pop(key, None)
    for key, value in (("in_chans", channels), ("num_classes", num_classes)):
        if kwargs.get(key, value) != value:
            raise ConfigError(
                f"model.{key}={kwargs[key]} does not match the dataset, which has {value}; drop "
                f"the override: the model takes {key} from the data."
            )
    return {**kwargs, "in_chans": channels, "num_classes": num_classes}


def build_model(model_cfg: DictConfig, channels: int, num_classes: int) -> VisionTransformer:
    return VisionTransformer(**model_kwargs(model_cfg, channels, num_classes))
