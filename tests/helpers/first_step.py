"""The model and global batch shared by the single-process and the torchrun gradient checks."""

from __future__ import annotations

import torch

from src.model.vit import VisionTransformer


def make_model() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        image_size=16,
        patch_size=4,
        in_chans=1,
        num_classes=10,
        embed_dim=32,
        depth=2,
        num_heads=2,
        drop_path_rate=0.0,
    )


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(8, 1, 16, 16, generator=generator), torch.randint(
        0, 10, (8,), generator=generator
    )
