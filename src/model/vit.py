"""A Vision Transformer written by hand (Dosovitskiy et al., 2021).

Parameter names and shapes follow timm's ``VisionTransformer`` exactly, so timm's weights load
into this model with ``strict=True`` and both give the same logits (tests/test_model.py).

Shapes in comments: B batch, C channels, H/W image size, P patch size, N = (H/P)*(W/P) patches,
D embedding dim, h heads, d = D/h head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from src.errors import ConfigError


class PatchEmbed(nn.Module):
    """Cut the image into P x P patches and project each to D dims (a strided conv does both)."""

    def __init__(self, image_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.image_size, self.patch_size = image_size, patch_size
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, H/P, W/P)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    """Multi-head self-attention.

    Two paths compute the same thing: the fused ``F.scaled_dot_product_attention`` (fast, the
    default) and the explicit softmax(Q K^T / sqrt(d)) V, which can hand back the attention weights.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        fused: bool = True,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused = fused
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, D = x.shape  # T tokens: the class token and N patches
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, T, d)

        attn = None
        if self.fused and not return_attention:
            dropout_p = self.attn_drop.p if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, h, T, T)
            attn = attn.softmax(dim=-1)
            x = self.attn_drop(attn) @ v  # (B, h, T, d)

        x = x.transpose(1, 2).reshape(B, T, D)  # heads side by side again
        x = self.proj_drop(self.proj(x))
        return x, attn


class Mlp(nn.Module):
    """Two linear layers with a GELU between: the per-token feed-forward network."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch for a random subset of samples."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
        # Rescaled so the expected output is unchanged; the (B, 1, 1) mask is scaled, not the
        # activation, so the whole activation is read once (as timm does).
        return x * mask.div_(keep_prob)


class PatchDropout(nn.Module):
    """Drop a random share of the patch tokens of each image while training (PatchDropout, Liu et
    al. 2022; timm's ``patch_drop_rate``): fewer tokens make each training step cheaper. The class
    token always stays; evaluation sees every patch."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        cls, patches = x[:, :1], x[:, 1:]  # (B, 1, D), (B, N, D)
        keep = max(1, int(patches.shape[1] * (1.0 - self.drop_prob)))
        order = torch.argsort(torch.randn(patches.shape[:2], device=x.device), dim=-1)
        kept = order[:, :keep, None].expand(-1, -1, x.shape[-1])  # (B, keep, D)
        return torch.cat([cls, patches.gather(1, kept)], dim=1)  # (B, 1 + keep, D)


class Block(nn.Module):
    """A pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        fused_attention: bool = True,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, fused_attention)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, attn = self.attn(self.norm1(x), return_attention)
        x = x + self.drop_path1(attn_out)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x, attn


def sincos_2d_position_embedding(grid_size: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings (MAE / "Better plain ViT baselines"), (N, D).

    Half of the dims encode the row, half the column; each half is sin and cos at D/4 frequencies.
    """
    if dim % 4 != 0:
        raise ConfigError(
            f"model.embed_dim={dim} must be divisible by 4 for model.pos_embed=sincos; "
            "choose another embed_dim or use model.pos_embed=learned."
        )
    rows, cols = torch.meshgrid(
        torch.arange(grid_size, dtype=torch.float64),
        torch.arange(grid_size, dtype=torch.float64),
        indexing="ij",
    )
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    row_angles = rows.flatten()[:, None] * omega[None, :]  # (N, D/4)
    col_angles = cols.flatten()[:, None] * omega[None, :]
    emb = torch.cat([row_angles.sin(), row_angles.cos(), col_angles.sin(), col_angles.cos()], dim=1)
    return emb.float()


class VisionTransformer(nn.Module):
    """ViT: patch embedding + class token + position embeddings -> blocks -> norm -> head."""

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        pos_embed: str = "learned",
        fused_attention: bool = True,
        global_pool: str = "token",
        patch_drop_rate: float = 0.0,
    ):
        super().__init__()
        check_shape(image_size, patch_size, embed_dim, num_heads)
        check_pos_embed(pos_embed)
        check_global_pool(global_pool)
        # "learned" or "sincos", recorded: requires_grad cannot tell them apart once a frozen
        # backbone (a linear probe) has turned it off for learned positions too.
        self.pos_embed_kind, self.global_pool = pos_embed, global_pool
        self.num_classes, self.embed_dim = num_classes, embed_dim

        self.patch_embed = PatchEmbed(image_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        self.patch_drop = PatchDropout(patch_drop_rate)

        # Stochastic depth grows linearly with depth, from 0 to drop_path_rate.
        drop_paths = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                qkv_bias,
                drop_rate,
                attn_drop_rate,
                drop_paths[i],
                fused_attention,
            )
            for i in range(depth)
        )
        # As in timm: the class token is normed before the head; with average pooling the norm
        # moves after the pooling (fc_norm), and the class token stays in the sequence unused.
        pooled_by_avg = global_pool == "avg"
        self.norm = nn.Identity() if pooled_by_avg else nn.LayerNorm(embed_dim, eps=1e-6)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if pooled_by_avg else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        self._init_weights(pos_embed)

    def _init_weights(self, pos_embed: str) -> None:
        """timm's default ('timm') init: truncated normal 0.02 for linears and pos_embed."""
        if pos_embed == "sincos":
            grid = self.patch_embed.grid_size
            with torch.no_grad():
                self.pos_embed[0, 1:] = sincos_2d_position_embedding(grid, self.embed_dim)
            self.pos_embed.requires_grad_(False)  # fixed, but kept under the same name as timm
        else:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward_features(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.patch_embed(x)  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1) + self.position_embedding(x.shape[1])  # (B, N+1, D)
        x = self.patch_drop(self.pos_drop(x))  # (B, 1 + kept, D) while training
        attentions = []
        for block in self.blocks:
            x, attn = block(x, return_attention)
            if return_attention:
                attentions.append(attn)  # (B, h, N+1, N+1)
        return self.norm(x), attentions

    def position_embedding(self, num_patches: int) -> torch.Tensor:
        """The position embeddings for ``num_patches`` patches: the model's own at its image size;
        for a smaller or larger square grid (progressive resizing, src/training/resize.py),
        resized to it, so that the gradient still reaches the model's own."""
        if num_patches == self.patch_embed.num_patches:
            return self.pos_embed
        return resize_position_embedding(self.pos_embed, math.isqrt(num_patches))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.forward_features(x)  # (B, N+1, D)
        pooled = x[:, 1:].mean(dim=1) if self.global_pool == "avg" else x[:, 0]  # (B, D)
        return self.head(self.head_drop(self.fc_norm(pooled)))  # (B, classes)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every block, each (B, heads, N+1, N+1), by the explicit path."""
        _, attentions = self.forward_features(x, return_attention=True)
        return attentions

    def readout_attention(self, attention: torch.Tensor) -> torch.Tensor:
        """(B, N+1, N+1) token-to-token weights -> (B, N): how much the token(s) the head reads
        draw on each patch. That is the class token's row, or with average pooling the mean of
        the patch tokens' rows."""
        if self.global_pool == "avg":
            return attention[:, 1:, 1:].mean(dim=1)
        return attention[:, 0, 1:]


def resize_position_embedding(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + g*g, D) -> (1, 1 + grid*grid, D): patch positions resized bicubically as an image."""
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    old = math.isqrt(patches.shape[1])
    image = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2)  # (1, D, g, g)
    image = F.interpolate(
        image.float(), size=(grid, grid), mode="bicubic", align_corners=False, antialias=grid < old
    )
    return torch.cat([cls, image.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def check_shape(image_size: int, patch_size: int, embed_dim: int, num_heads: int) -> None:
    """Raise a ConfigError naming the setting when the ViT's shape cannot work."""
    if image_size % patch_size != 0:
        raise ConfigError(
            f"model.image_size={image_size} is not divisible by model.patch_size={patch_size}; "
            f"choose a patch size that divides the image size (e.g. "
            f"{_divisors_hint(image_size)})."
        )
    if embed_dim % num_heads != 0:
        raise ConfigError(
            f"model.embed_dim={embed_dim} is not divisible by model.num_heads={num_heads}; "
            "choose a number of heads that divides the embedding dim."
        )


def check_pos_embed(pos_embed: str) -> None:
    if pos_embed not in ("learned", "sincos"):
        raise ConfigError(f"model.pos_embed={pos_embed!r} is not known; use 'learned' or 'sincos'.")


def check_global_pool(global_pool: str) -> None:
    if global_pool not in ("token", "avg"):
        raise ConfigError(
            f"model.global_pool={global_pool!r} is not known; use 'token' (the class token) "
            "or 'avg' (the mean of the patch tokens)."
        )


def _divisors_hint(n: int) -> str:
    divisors = [d for d in range(2, int(math.sqrt(n)) * 2 + 1) if n % d == 0 and d < n]
    return ", ".join(map(str, divisors[:4])) or "1"


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def attention_rollout(attentions: list[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): how much each token draws on each input token.

    Heads are averaged, the residual connection is modelled by adding the identity, each row is
    renormalised, and the layers are multiplied together. Returns (B, N+1, N+1); row 0 is the
    class token's view of the image, and every row sums to 1.
    """
    rollout = None
    for attn in attentions:
        a = attn.mean(dim=1)  # (B, N+1, N+1), heads averaged
        a = a + torch.eye(a.shape[-1], device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    return rollout
