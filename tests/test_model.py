"""The hand-written ViT against timm's reference implementation, and its two attention paths."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT

from src.errors import ConfigError
from src.model.vit import Attention, VisionTransformer, sincos_2d_position_embedding

SHAPES = [
    # 32x32 RGB, patch 4, a ViT-Tiny-width model of 3 blocks
    dict(
        image_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=192, depth=3, num_heads=3
    ),
    # 28x28 grey (MNIST-like), patch 7
    dict(
        image_size=28,
        patch_size=7,
        in_chans=1,
        num_classes=10,
        embed_dim=64,
        depth=2,
        num_heads=4,
        mlp_ratio=2.0,
    ),
]


def timm_model(shape: dict) -> TimmViT:
    kwargs = dict(shape)
    kwargs["img_size"] = kwargs.pop("image_size")
    return TimmViT(**kwargs)


@pytest.mark.parametrize("shape", SHAPES, ids=["32px-p4-d192", "28px-p7-gray"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "explicit"])
def test_timm_weights_load_strictly_and_give_the_same_logits(shape, fused):
    torch.manual_seed(0)
    reference = timm_model(shape).eval()
    ours = VisionTransformer(**shape, fused_attention=fused).eval()

    ours.load_state_dict(reference.state_dict(), strict=True)

    x = torch.randn(4, shape["in_chans"], shape["image_size"], shape["image_size"])
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


def test_parameter_names_and_shapes_match_timm():
    shape = SHAPES[0]
    ours = {k: v.shape for k, v in VisionTransformer(**shape).state_dict().items()}
    theirs = {k: v.shape for k, v in timm_model(shape).state_dict().items()}
    assert ours == theirs


def test_fused_and_explicit_attention_agree():
    torch.manual_seed(0)
    attn = Attention(dim=48, num_heads=4).eval()
    x = torch.randn(2, 17, 48)
    fused, no_weights = attn(x)
    attn.fused = False
    explicit, weights = attn(x)
    torch.testing.assert_close(fused, explicit, atol=1e-6, rtol=1e-5)
    assert no_weights is None
    assert weights.shape == (2, 4, 17, 17)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 17))


def test_attention_maps_come_from_every_block_without_changing_the_output():
    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=8, patch_size=2, in_chans=1, num_classes=3, embed_dim=32, depth=3, num_heads=2
    ).eval()
    x = torch.randn(2, 1, 8, 8)
    maps = model.attention_maps(x)
    assert len(maps) == 3
    assert all(m.shape == (2, 2, 17, 17) for m in maps)
    _, attentions = model.forward_features(x)
    assert attentions == []  # the fused path keeps no weights


def test_stochastic_depth_is_active_in_training_and_off_in_eval():
    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=8,
        patch_size=2,
        in_chans=1,
        num_classes=3,
        embed_dim=32,
        depth=4,
        num_heads=2,
        drop_path_rate=0.5,
    )
    x = torch.randn(8, 1, 8, 8)
    model.train()
    assert not torch.equal(model(x), model(x))  # a different subset of branches dropped each time
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    rates = [block.drop_path1.drop_prob for block in model.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5)


def test_in_training_patch_dropout_and_drop_path_match_timm_draw_for_draw():
    """Training mode with both random drops: from the same seed, timm's PatchDropout and DropPath
    and ours draw the same tokens and samples, so the logits and gradients agree."""
    shape = dict(SHAPES[0], patch_drop_rate=0.5, drop_path_rate=0.3)
    torch.manual_seed(0)
    reference = timm_model(shape).train()
    ours = VisionTransformer(**shape).train()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(1)
    theirs = reference(x)
    torch.manual_seed(1)
    mine = ours(x)
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
    theirs.sum().backward()
    mine.sum().backward()
    torch.testing.assert_close(
        ours.blocks[0].mlp.fc1.weight.grad, reference.blocks[0].mlp.fc1.weight.grad
    )


def test_patch_dropout_keeps_the_class_token_and_a_share_of_patches_in_training_only():
    model = VisionTransformer(
        image_size=8, patch_size=2, in_chans=1, num_classes=3, embed_dim=32, depth=2,
        num_heads=2, fused_attention=False, patch_drop_rate=0.75,
    )  # fmt: skip
    x = torch.randn(5, 1, 8, 8)
    model.train()
    _, attentions = model.forward_features(x, return_attention=True)
    assert attentions[0].shape == (5, 2, 1 + 4, 1 + 4)  # 16 patches, a quarter kept, + class
    assert not torch.equal(model(x), model(x))  # another draw of patches each step
    model.eval()
    _, attentions = model.forward_features(x, return_attention=True)
    assert attentions[0].shape == (5, 2, 17, 17)  # evaluation sees every patch
    torch.testing.assert_close(model(x), model(x))


def test_timm_style_init():
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=4, embed_dim=192, depth=2, num_heads=3)
    assert model.pos_embed.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.cls_token.abs().max().item() < 1e-4
    assert model.blocks[0].mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.count_nonzero(model.head.bias) == 0


def test_sincos_position_embedding_is_fixed_and_distinct_per_position():
    model = VisionTransformer(
        image_size=16,
        patch_size=4,
        in_chans=1,
        num_classes=2,
        embed_dim=32,
        depth=1,
        num_heads=2,
        pos_embed="sincos",
    )
    assert not model.pos_embed.requires_grad
    torch.testing.assert_close(model.pos_embed[0, 1:], sincos_2d_position_embedding(4, 32))
    assert torch.count_nonzero(model.pos_embed[0, 0]) == 0  # the class token has no position
    grid = model.pos_embed[0, 1:]
    distances = torch.cdist(grid, grid)
    assert (distances + torch.eye(16)).min() > 0  # no two positions share an embedding


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        (
            dict(image_size=30, patch_size=4),
            "model.image_size=30 is not divisible by model.patch_size=4",
        ),
        (
            dict(embed_dim=50, num_heads=4),
            "model.embed_dim=50 is not divisible by model.num_heads=4",
        ),
        (dict(pos_embed="rope"), "model.pos_embed='rope' is not known"),
        (dict(embed_dim=18, num_heads=3, pos_embed="sincos"), "must be divisible by 4"),
    ],
)
def test_impossible_shapes_are_refused_with_the_setting_named(kwargs, setting):
    base = dict(image_size=32, patch_size=4, embed_dim=48, depth=1, num_heads=4)
    with pytest.raises(ConfigError, match=setting.replace("(", r"\(")):
        VisionTransformer(**{**base, **kwargs})
