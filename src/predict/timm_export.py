"""A run's model for timm users: its weights under timm's names and a config.json with timm's
arguments (``inference.py --export-timm DIR``)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from src.contract import RunPaths


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
    }


def export_for_timm(run_dir: Path, out_dir: Path) -> Path:
    """model.safetensors + config.json that timm reads: ``timm.create_model('vit_base_patch16_224',
    pretrained=True, pretrained_cfg_overlay=dict(file=...), **config['model_args'])``, or
    ``timm.models.vision_transformer.VisionTransformer(**model_args)`` + load_state_dict."""
    paths = RunPaths(run_dir)
    card = json.loads(paths.model_card.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(load_file(paths.best_weights), out_dir / "model.safetensors")
    config = {
        "architecture": "vit",
        "num_classes": card["model"]["num_classes"],
        "label_names": card["class_names"],
        "model_args": timm_kwargs(card),
        "pretrained_cfg": {
            "input_size": [card["channels"], card["image_size"], card["image_size"]],
            "mean": card["mean"],
            "std": card["std"],
            "interpolation": "bilinear",
        },
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir
