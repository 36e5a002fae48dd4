"""A run's model for timm users: its weights under timm's names and a config.json with timm's
arguments (``inference.py --export-timm DIR``), in the layout of the Hugging Face Hub, so that
``timm.create_model("local-dir:DIR", pretrained=True)`` builds and loads it."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from src.contract import RunPaths

# A timm model name, for its builder (VisionTransformer): model_args set every size, so the name's
# own sizes never apply. timm requires a registered name in config.json's "architecture".
TIMM_ARCHITECTURE = "vit_tiny_patch16_224"


def timm_kwargs(card: dict) -> dict:
    """timm's VisionTransformer arguments for a run's model.json."""
    m = card["model"]
    return {
        "img_size": m["image_size"],
        "patch_size": m["patch_size"],
        "in_chans": m["in_chans"],
        "num_classes": m["num_classes"],
        "embed_dim": m["embed_dim"],
        "depth": m["depth"],
        "num_heads": m["num_heads"],
        "mlp_ratio": m["mlp_ratio"],
        "qkv_bias": m["qkv_bias"],
        "global_pool": m.get("global_pool", "token"),
        "class_token": True,  # ours always has one, with its own position (timm's defaults)
        "no_embed_class": False,
    }


def timm_config(card: dict) -> dict:
    """config.json as timm and the Hugging Face Hub read it: the architecture and its arguments,
    the class names, and the preprocessing (pretrained_cfg: the run's input size and mean/std;
    the whole image, resized bilinearly, as the workbench reads it, so timm's transforms give the
    model the workbench's input)."""
    return {
        "architecture": TIMM_ARCHITECTURE,
        "num_classes": card["model"]["num_classes"],
        "num_features": card["model"]["embed_dim"],
        "label_names": card["class_names"],
        "model_args": timm_kwargs(card),
        "pretrained_cfg": {
            "input_size": [card["channels"], card["image_size"], card["image_size"]],
            "fixed_input_size": True,
            "mean": card["mean"],
            "std": card["std"],
            "interpolation": "bilinear",
            # The whole image stretched to the square, as the workbench reads it: no centre crop.
            "crop_pct": 1.0,
            "crop_mode": "squash",
            "first_conv": "patch_embed.proj",
            "classifier": "head",  # what timm replaces for another num_classes
        },
    }


def export_for_timm(run_dir: Path, out_dir: Path) -> Path:
    """model.safetensors + config.json that timm reads: ``timm.create_model("local-dir:DIR",
    pretrained=True)`` (or ``hf-hub:USER/NAME`` once uploaded), or
    ``timm.models.vision_transformer.VisionTransformer(**model_args)`` + load_state_dict."""
    paths = RunPaths(run_dir)
    card = json.loads(paths.model_card.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(load_file(paths.best_weights), out_dir / "model.safetensors")
    config = timm_config(card)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir
