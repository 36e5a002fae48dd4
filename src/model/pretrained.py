"""Starting from weights instead of random init, and handing weights to timm.

``model.pretrained`` may be
  - a run folder of this project (its weights/best.safetensors),
  - a .safetensors, .pth/.pt/.bin file of timm-named ViT weights (read without running code),
  - a .npz file of the original (JAX) ViT weights, or
  - a timm model name, e.g. vit_tiny_patch16_224.augreg_in21k (downloaded by timm when online).

The weights are then fitted to the model being trained: the position embeddings are resized
(bicubic) to its patch grid, the patch projection is summed or spread to its input channels, and the
head is left newly initialised when the number of classes differs. What happened to every tensor is
reported, and kept in summary.json.

Weights expect images normalised as in their own training: the report carries that mean and std
where the source says it (a timm name's pretrained config, a config.json beside a weights file as
timm and the Hugging Face Hub keep it, a run folder's model.json, 0.5/0.5 for the original .npz
release), and the run then normalises its images with them instead of its dataset's.
"""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from src.contract import RunPaths
from src.errors import ConfigError, last_line, refusal_reason
from src.model.vit import DropPath, VisionTransformer, resize_position_embedding

log = logging.getLogger(__name__)

HEAD = ("head.weight", "head.bias")
WEIGHT_FILES = (".safetensors", ".pth", ".pt", ".bin", ".npz")


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)  # "name: old shape -> new shape"
    new: list[str] = field(default_factory=list)  # left as initialised
    ignored: list[str] = field(default_factory=list)  # in the source, not in this model
    mean: list[float] | None = None  # the weights' own input normalisation, where known
    std: list[float] | None = None

    def summary(self) -> dict:
        return {
            "source": self.source,
            "loaded": len(self.loaded),
            "resized": self.resized,
            "new": self.new,
            "ignored": self.ignored,
            **({"mean": self.mean, "std": self.std} if self.mean is not None else {}),
        }


def read_weights(source: str) -> dict[str, torch.Tensor]:
    """A timm-named state dict from any of the sources this module's docstring lists."""
    path = Path(source).expanduser()
    if path.is_dir():
        weights = RunPaths(path).best_weights
        if not weights.is_file():
            raise ConfigError(
                f"model.pretrained={source}: the folder has no weights/best.safetensors; give a "
                "run folder with weights."
            )
        return load_file(weights)
    if path.is_file():
        return _read_file(path, source)
    if path.suffix in WEIGHT_FILES or "/" in source:
        raise ConfigError(f"model.pretrained={source}: no such file or run folder.")
    return _from_timm(source)  # e.g. vit_tiny_patch16_224.augreg_in21k


# The original ViT release (and timm's augreg weights) read pixels scaled to [-1, 1].
ORIGINAL_VIT_NORMALISATION = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])


def read_normalisation(source: str) -> tuple[list[float], list[float]] | None:
    """The mean and std (per channel, of pixels in [0, 1]) the weights were trained with, when
    the source says: a run folder's model.json, a config.json beside a weights file (timm's and
    the Hugging Face Hub's layout, and what ``export_for_timm`` writes), the original .npz
    release's 0.5/0.5, or a timm name's pretrained config. None when it is not known."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _mean_std(_read_json(RunPaths(path).model_card))
    if path.is_file():
        if path.suffix == ".npz":
            return ORIGINAL_VIT_NORMALISATION
        config = _read_json(path.parent / "config.json") or {}
        return _mean_std(config.get("pretrained_cfg")) or _mean_std(config)
    try:
        from timm.models import get_pretrained_cfg
    except ImportError:
        return None
    try:
        return _mean_std(get_pretrained_cfg(source).to_dict())
    except Exception:  # an unknown name: _from_timm has already said so
        return None


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _mean_std(config: dict | None) -> tuple[list[float], list[float]] | None:
    if not isinstance(config, dict):
        return None
    mean, std = config.get("mean"), config.get("std")
    if not (
        isinstance(mean, (list, tuple))
        and isinstance(std, (list, tuple))
        and mean
        and len(mean) == len(std)
    ):
        return None
    return [float(m) for m in mean], [float(s) for s in std]


def fit_channels(values: list[float], channels: int) -> list[float]:
    """Per-channel values for another number of channels, as the patch projection is fitted
    (``adapt_input_channels``): RGB -> grey averages them, grey -> RGB repeats."""
    if len(values) == channels:
        return list(values)
    if channels == 1:
        return [sum(values) / len(values)]
    if len(values) == 1:
        return list(values) * channels
    raise ConfigError(f"cannot adapt a {len(values)}-channel normalisation to {channels} channels.")


def _read_file(path: Path, source: str) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        if path.suffix == ".npz":
            arrays = dict(np.load(path))
            try:
                return from_original_vit(arrays)
            except KeyError as missing:
                raise ConfigError(
                    f"model.pretrained={source} is not in the original ViT release's layout (it "
                    f"has no {missing}); give that release's .npz, or timm-named weights."
                ) from None
        if path.suffix in WEIGHT_FILES:  # .pth, .pt, .bin
            state = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("model", "state_dict", "model_state_dict"):  # common checkpoint wrappers
                if isinstance(state, dict) and isinstance(state.get(key), dict):
                    state = state[key]
            if not isinstance(state, dict):
                raise ConfigError(
                    f"model.pretrained={source} holds a {type(state).__name__}, not named weights "
                    "(a state dict); save the model's state_dict() instead."
                )
            return {
                k.removeprefix("module."): v
                for k, v in state.items()
                if isinstance(v, torch.Tensor)
            }
    except pickle.UnpicklingError as err:
        raise ConfigError(
            f"model.pretrained={source} holds pickled objects other than tensors, "
            "so it was refused unread "
            f"(torch.load weights_only=True: {refusal_reason(err)})."
        ) from None
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError, EOFError) as err:
        raise ConfigError(
            f"model.pretrained={source} could not be read ({last_line(err)})."
        ) from None
    raise ConfigError(
        f"model.pretrained={source}: {path.suffix or 'a file without an extension'} is not a "
        "weights format this reads; use .safetensors, .pth/.pt/.bin, .npz, a run folder or a "
        "timm model name."
    )


def _from_timm(name: str) -> dict[str, torch.Tensor]:
    try:
        import timm
    except ImportError:
        raise ConfigError(
            f"model.pretrained={name} looks like a timm model name, but timm is not installed; "
            "pip install timm, or pass a weights file."
        ) from None
    try:
        return timm.create_model(name, pretrained=True).state_dict()
    except Exception as err:  # unknown name, no network, no hub access: all end the same way
        raise ConfigError(
            f"model.pretrained={name}: timm could not provide these weights ({last_line(err)}); "
            "offline, pass a downloaded .safetensors/.pth/.npz file instead."
        ) from None


def from_original_vit(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The original ViT release's .npz names and layouts -> timm's (as timm's own loader does)."""
    t = lambda key: torch.from_numpy(np.ascontiguousarray(arrays[key])).float()  # noqa: E731
    state = {
        "patch_embed.proj.weight": t("embedding/kernel").permute(
            3, 2, 0, 1
        ),  # (P, P, C, D) -> (D, C, P, P)
        "patch_embed.proj.bias": t("embedding/bias"),
        "cls_token": t("cls"),
        "pos_embed": t("Transformer/posembed_input/pos_embedding"),
        "norm.weight": t("Transformer/encoder_norm/scale"),
        "norm.bias": t("Transformer/encoder_norm/bias"),
    }
    if "head/kernel" in arrays:
        state["head.weight"], state["head.bias"] = t("head/kernel").T, t("head/bias")
    depth = sum(1 for key in arrays if key.endswith("/LayerNorm_0/scale"))
    for i in range(depth):
        block, ours = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        attn = block + "MultiHeadDotProductAttention_1/"
        dim = t(attn + "query/kernel").shape[0]
        for norm, layer_norm in (("norm1", "LayerNorm_0"), ("norm2", "LayerNorm_2")):
            state[f"{ours}{norm}.weight"] = t(f"{block}{layer_norm}/scale")
            state[f"{ours}{norm}.bias"] = t(f"{block}{layer_norm}/bias")
        state[ours + "attn.qkv.weight"] = torch.cat(
            [t(f"{attn}{n}/kernel").reshape(dim, dim).T for n in ("query", "key", "value")]
        )  # (D, heads, d) each -> (3D, D)
        state[ours + "attn.qkv.bias"] = torch.cat(
            [t(f"{attn}{n}/bias").flatten() for n in ("query", "key", "value")]
        )
        state[ours + "attn.proj.weight"] = (
            t(attn + "out/kernel").reshape(dim, dim).T
        )  # (heads, d, D) -> (D, D)
        state[ours + "attn.proj.bias"] = t(attn + "out/bias")
        for j, fc in ((0, "fc1"), (1, "fc2")):
            state[f"{ours}mlp.{fc}.weight"] = t(f"{block}MlpBlock_3/Dense_{j}/kernel").T
            state[f"{ours}mlp.{fc}.bias"] = t(f"{block}MlpBlock_3/Dense_{j}/bias")
    return state


def load_pretrained(model: VisionTransformer, source: str) -> LoadReport:
    """Loads ``source`` into ``model`` (in place), fitting shapes where that is well defined."""
    state = read_weights(source)
    report = LoadReport(str(source))
    own = model.state_dict()
    fitted: dict[str, torch.Tensor] = {}
    for name, target in own.items():
        if name == "pos_embed" and model.pos_embed_kind == "sincos":
            report.new.append("pos_embed (fixed sin-cos, kept)")
            continue
        if name not in state:
            report.new.append(name)
            continue
        tensor = state[name].to(target.dtype)
        if tensor.shape == target.shape:
            fitted[name] = tensor
            report.loaded.append(name)
        elif name in HEAD:
            report.new.append(name)  # another number of classes: this task's head starts fresh
        else:
            fitted[name] = _fit(name, tensor, target, model, source)
            report.resized.append(f"{name}: {tuple(tensor.shape)} -> {tuple(target.shape)}")
    report.ignored = sorted(set(state) - set(own))
    if not fitted:  # training would start from scratch, with only a log line to say so
        held = ", ".join(report.ignored[:3]) or "no tensors"
        more = ", ..." if len(report.ignored) > 3 else ""
        raise ConfigError(
            f"model.pretrained={source} matched none of the model's weights (it holds "
            f"{held}{more}); "
            "give ViT weights named as timm names them (patch_embed.proj.weight, blocks.0...)."
        )
    model.load_state_dict(fitted, strict=False)
    normalisation = read_normalisation(source)
    if normalisation is not None:
        channels = model.patch_embed.proj.in_channels
        report.mean, report.std = (fit_channels(values, channels) for values in normalisation)
    log.info(
        "pretrained %s: %d tensors loaded, %d resized (%s), %d left as initialised (%s)%s; %s",
        source,
        len(report.loaded),
        len(report.resized),
        "; ".join(report.resized) or "none",
        len(report.new),
        ", ".join(report.new) or "none",
        f", {len(report.ignored)} ignored ({', '.join(report.ignored)})" if report.ignored else "",
        f"images normalised as the weights were trained (mean {report.mean}, std {report.std})"
        if report.mean is not None
        else "their normalisation is not known, so the dataset's is used",
    )
    return report


def _fit(
    name: str, tensor: torch.Tensor, target: torch.Tensor, model: VisionTransformer, source: str
) -> torch.Tensor:
    if name == "pos_embed":
        return resize_position_embedding(tensor, model.patch_embed.grid_size)
    if name == "patch_embed.proj.weight" and tensor.shape[2:] == target.shape[2:]:
        return adapt_input_channels(tensor, target.shape[1])
    raise ConfigError(
        f"model.pretrained={source}: {name} has shape {tuple(tensor.shape)} there and "
        f"{tuple(target.shape)} here; use the pretrained model's width, depth, heads and patch "
        "size (model.embed_dim, model.depth, model.num_heads, model.patch_size)."
    )


def adapt_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Patch projection (D, C, P, P) for another number of input channels: RGB -> grey sums the
    colour filters (a grey image is R = G = B); grey -> RGB spreads the filter over the three."""
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    if weight.shape[1] == 1:
        return weight.repeat(1, channels, 1, 1) / channels
    raise ConfigError(
        f"cannot adapt a {weight.shape[1]}-channel patch projection to {channels} channels."
    )


def freeze_backbone(model: VisionTransformer) -> None:
    """A linear probe: only the head keeps learning, on the features the backbone computes
    without dropout and drop-path (a frozen backbone learns nothing from them, and the head
    would learn from noisier features than it is later tested on)."""
    for name, param in model.named_parameters():
        if not name.startswith("head."):
            param.requires_grad_(False)
    for name, module in model.named_modules():
        if name == "head_drop":  # the head's own dropout, on its input, still regularises it
            continue
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        elif isinstance(module, DropPath):
            module.drop_prob = 0.0
