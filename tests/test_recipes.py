"""The accuracy-recipe techniques, each shown to change what it should and nothing else:
RandAugment, random erasing, Mixup/CutMix with soft targets, repeated augmentation, gradient
accumulation, EMA of the weights, average pooling; and the experiment presets."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from hydra.utils import instantiate
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer as TimmViT

from src.data import BatchAugment, BatchLoader, MixBatch, Split
from src.data.loaders import epoch_order, repeat_in_batches
from src.data.randaugment import GEOMETRY, OPS, VARIANTS, BatchRandAugment
from src.data.sizes import crop_pixels
from src.errors import ConfigError
from src.model.build import build_model
from src.model.vit import VisionTransformer, attention_rollout
from src.training.checks import check_config
from src.training.ema import WeightAverage
from src.training.loops import train_one_epoch
from src.training.optim import build_optimizer, constant
from src.training.run import train
from tests.conftest import CONFIGS, TINY_RUN, compose_config


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def digit_like(batch: int = 8, channels: int = 1, size: int = 16) -> torch.Tensor:
    """An off-centre bar with a gradient, short of full contrast: each RandAugment op changes it."""
    x = torch.full((batch, channels, size, size), 0.1)
    x[:, :, 3:12, 5:8] = torch.linspace(0.4, 0.8, 9).view(1, 1, 9, 1)
    x[:, :, 3:5, 5:12] = 0.7
    return x


# --- RandAugment -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in OPS if n not in ("identity", "color")])
def test_every_randaugment_operation_changes_an_image_and_keeps_it_in_range(name):
    x = digit_like(2)
    out = OPS[name](x, 0.9)
    assert out.shape == x.shape
    assert not torch.equal(out, x), f"{name} left the image unchanged"
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("strength", [0.9, -0.4])
def test_randaugment_operations_done_here_equal_torchvisions(strength):
    """Geometric ops go through pixel maps, sharpness and autocontrast are written out (to keep
    the GPU from waiting); each must give exactly what torchvision's own op gives."""
    x = torch.rand(3, 3, 13, 17, generator=gen(0))
    x[1] = 0.25  # a flat image: autocontrast leaves it as it is
    for name, op in GEOMETRY.items():
        assert torch.equal(OPS[name](x, strength), op(x, strength)), name
    torch.testing.assert_close(
        OPS["sharpness"](x, strength), TF.adjust_sharpness(x, 1 + 0.9 * strength)
    )
    assert torch.equal(OPS["autocontrast"](x, strength), TF.autocontrast(x))


def test_batch_randaugment_applies_to_each_image_the_operation_it_drew():
    x = torch.rand(40, 3, 12, 12, generator=gen(2))
    augment = BatchRandAugment(num_ops=1, magnitude=9)
    orders, sizes = augment.draw(len(x), gen(5))
    out = augment.apply(x, orders, sizes)
    drawn = [VARIANTS[v] for v, n in enumerate(sizes[0]) for _ in range(n)]  # sorted by variant
    for position, (name, negative) in zip(orders[0].tolist(), drawn):
        s = -augment.strength if negative else augment.strength
        expected = OPS[name](x[position : position + 1], s).clamp(0, 1)
        torch.testing.assert_close(out[position : position + 1], expected, msg=name)


def test_randaugment_changes_colour_only_where_there_is_colour():
    grey, rgb = digit_like(2), digit_like(2, channels=3)
    rgb[:, 0] *= 0.5  # a coloured image
    assert torch.equal(OPS["color"](grey, 0.9), grey)
    assert not torch.equal(OPS["color"](rgb, 0.9), rgb)


def test_randaugment_gives_each_image_its_own_operations_and_is_seeded():
    x = digit_like(64)
    out = BatchRandAugment(num_ops=2, magnitude=9)(x, gen(0))
    distinct = {tuple(img.flatten().tolist()) for img in out}
    assert len(distinct) > 20  # the same image, augmented many different ways in one batch
    assert torch.equal(out, BatchRandAugment(2, 9)(x, gen(0)))
    assert not torch.equal(out, BatchRandAugment(2, 9)(x, gen(1)))


def test_randaugment_strength_follows_the_magnitude():
    x = digit_like(256)
    gentle = (BatchRandAugment(1, 2)(x, gen(0)) - x).abs().mean()
    strong = (BatchRandAugment(1, 20)(x, gen(0)) - x).abs().mean()
    assert strong > 2 * gentle > 0


def test_batch_augment_is_the_identity_with_everything_off():
    x = digit_like(8)
    assert torch.equal(BatchAugment()(x, gen()), x)


# --- Random erasing ----------------------------------------------------------------------------


def test_random_erasing_fills_one_box_per_chosen_image_and_leaves_the_rest():
    x = torch.full((200, 1, 32, 32), -1.0)  # a value erasing never writes (it writes [0, 1))
    out = BatchAugment(random_erasing=0.5)(x, gen(0))
    erased = out != -1.0
    hit = erased.flatten(1).any(dim=1)
    assert 70 < int(hit.sum()) < 130  # about half the images
    for mask in erased[hit, 0]:
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert int(mask.sum()) == h * w  # one solid rectangle
        assert 0.02 * 1024 * 0.5 <= h * w <= 1024 / 3 * 1.2  # 2% to 1/3 of the image (rounded)
    assert ((out[erased] >= 0) & (out[erased] < 1)).all()  # random pixels
    assert torch.equal(BatchAugment(random_erasing=0.0)(x, gen(0)), x)


# --- Mixup and CutMix --------------------------------------------------------------------------


def labelled_batch(n: int = 16, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(n) % classes
    images = labels.float().view(n, 1, 1, 1).expand(n, 1, 8, 8).clone()  # pixel value = label
    return images, labels


def test_mixup_blends_neighbours_and_their_targets_alike():
    torch.manual_seed(0)
    x, labels = labelled_batch()
    mixed, targets = MixBatch(4, mixup_alpha=0.8)(x, labels, gen())
    assert targets.shape == (16, 4)
    torch.testing.assert_close(targets.sum(1), torch.ones(16))
    lam = targets[0, labels[0]]  # each image keeps lam of itself, takes 1 - lam of its neighbour
    assert 0 < lam < 1
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.roll(1, 0))
    torch.testing.assert_close(
        targets, lam * F.one_hot(labels, 4) + (1 - lam) * F.one_hot(labels.roll(1), 4)
    )


def test_cutmix_pastes_a_box_and_weights_the_targets_by_its_area():
    torch.manual_seed(3)
    x, labels = labelled_batch()
    mixed, targets = MixBatch(4, cutmix_alpha=1.0)(x, labels, gen())
    pasted = (mixed != x).float().mean(dim=(1, 2, 3))  # share of each image from its neighbour
    assert ((mixed == x) | (mixed == x.roll(1, 0))).all()  # pixels come from one or the other
    assert pasted.max() > 0
    torch.testing.assert_close(targets[torch.arange(16), labels.roll(1)], pasted)


def test_mixing_can_be_off_or_occasional_and_then_gives_one_hot_targets():
    x, labels = labelled_batch()
    for mix in (MixBatch(4), MixBatch(4, mixup_alpha=0.8, prob=0.0)):
        out, targets = mix(x, labels, gen())
        assert torch.equal(out, x) and torch.equal(targets, F.one_hot(labels, 4).float())
    mix = MixBatch(4, mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.5)
    g = gen()
    mixed = [not torch.equal(mix(x, labels, g)[0], x) for _ in range(40)]
    assert 10 < sum(mixed) < 30


def test_training_batches_carry_soft_targets_when_mixing():
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    split = Split(images, torch.arange(32) % 4)
    loader = BatchLoader(
        split,
        8,
        8,
        [0.5],
        [0.5],
        torch.device("cpu"),
        shuffle=True,
        mix=MixBatch(4, mixup_alpha=1.0),
    )
    x, targets = next(iter(loader))
    assert targets.shape == (8, 4) and targets.dtype == torch.float32
    plain = BatchLoader(split, 8, 8, [0.5], [0.5], torch.device("cpu"), shuffle=True)
    assert next(iter(plain))[1].shape == (8,)


# --- Repeated augmentation ---------------------------------------------------------------------


def test_repeated_augmentation_repeats_each_image_within_its_batch():
    order = repeat_in_batches(torch.randperm(96, generator=gen()), repeats=3, batch_size=12)
    assert len(order) == 96  # an epoch keeps its length
    for batch in order.split(12):
        values, counts = batch.unique(return_counts=True)
        assert len(values) == 4 and (counts == 3).all()
        assert (batch != batch.roll(1)).all()  # Mixup's neighbour is never the image itself
    assert len(order.unique()) == 32
    assert torch.equal(
        epoch_order(96, gen(5), True, repeats=1), torch.randperm(96, generator=gen(5))
    )


def test_repeated_copies_are_augmented_differently():
    images = torch.randint(0, 256, (24, 1, 8, 8), dtype=torch.uint8)
    loader = BatchLoader(
        Split(images, torch.arange(24)),
        6,
        8,
        [0.0],
        [1.0],
        torch.device("cpu"),
        shuffle=True,
        augment=BatchAugment(crop_padding=2, random_erasing=1.0),
        repeats=3,
    )
    for x, labels in loader:
        for first in range(2):  # the batch is [a b a b a b]: three copies of a, three of b
            copies = [x[first + 2 * k] for k in range(3)]
            assert labels[first::2].unique().numel() == 1  # they are copies of one image
            assert all(not torch.equal(copies[i], copies[j]) for i in range(3) for j in range(i))


# --- Gradient accumulation ---------------------------------------------------------------------


def one_epoch_weights(batch_size: int, accumulate_steps: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=8, patch_size=4, in_chans=1, num_classes=4, embed_dim=16, depth=1, num_heads=2
    )
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8, generator=gen(1))
    loader = BatchLoader(
        Split(images, torch.arange(32) % 4), batch_size, 8, [0.5], [0.5], torch.device("cpu")
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = constant(optimizer, steps_per_epoch=4, epochs=1)
    train_one_epoch(
        model, loader, optimizer, scheduler, torch.device("cpu"), accumulate_steps=accumulate_steps
    )
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_shorter_last_group_is_a_mean_over_its_own_batches():
    """32 images in batches of 8, accumulating 3: one step on the mean of batches 1-3 (24
    images), then one on batch 4 alone (8 images), not on a third of it."""
    accumulated = one_epoch_weights(batch_size=8, accumulate_steps=3)
    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=8, patch_size=4, in_chans=1, num_classes=4, embed_dim=16, depth=1, num_heads=2
    )
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8, generator=gen(1))
    x, y = (images.float() / 255 - 0.5) / 0.5, torch.arange(32) % 4
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for part in (slice(0, 24), slice(24, 32)):
        optimizer.zero_grad()
        F.cross_entropy(model(x[part]), y[part]).backward()
        optimizer.step()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(accumulated[key], value, atol=1e-6, rtol=1e-5, msg=key)


def test_accumulating_gradients_equals_training_with_the_larger_batch():
    big = one_epoch_weights(batch_size=16, accumulate_steps=1)
    accumulated = one_epoch_weights(batch_size=8, accumulate_steps=2)
    small = one_epoch_weights(batch_size=8, accumulate_steps=1)
    for key in big:
        torch.testing.assert_close(accumulated[key], big[key], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(small["head.weight"], big["head.weight"])


# --- EMA ---------------------------------------------------------------------------------------


def test_ema_follows_the_weights_with_the_given_decay_after_its_warmup():
    model = torch.nn.Linear(3, 1)
    ema = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update()  # the first update copies the weights
    assert torch.equal(ema.module.weight, model.weight)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update()  # early on the average forgets fast: d = (1 + 1) / (10 + 1)
    torch.testing.assert_close(ema.module.weight, torch.full((1, 3), 2 / 11 * 1.0 + 9 / 11 * 3.0))
    for _ in range(200):
        ema.update()
    assert ema.current_decay() == 0.9  # warmed up: the decay asked for
    before = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.fill_(5.0)
    ema.update()
    torch.testing.assert_close(ema.module.weight, 0.9 * before + 0.1 * 5.0)
    restored = WeightAverage(model, decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == ema.updates == 203


def test_a_run_with_ema_validates_it_and_saves_the_better_weights(tmp_path):
    cfg = compose_config(
        TINY_RUN + ["trainer.epochs=3", "trainer.ema=true", "trainer.ema_decay=0.9"]
    )
    train(cfg, tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"ema_val_acc", "ema_val_loss"} <= set(metrics.columns)
    assert not metrics["ema_val_loss"].equals(metrics["val_loss"])
    best = metrics.loc[metrics["epoch"] == summary["best_epoch"]].iloc[0]
    column = "ema_val_acc" if summary["best_weights"] == "ema" else "val_acc"
    assert (
        best[column]
        == summary["best_val_acc"]
        == max(metrics.val_acc.max(), metrics.ema_val_acc.max())
    )
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["ema"]["n_averaged"] == checkpoint["step"]
    weights = load_file(tmp_path / "weights" / "best.safetensors")
    if summary["best_epoch"] == 3:  # then best.safetensors is the last epoch's model or EMA
        source = (
            {k.removeprefix("module."): v for k, v in checkpoint["ema"].items()}
            if summary["best_weights"] == "ema"
            else checkpoint["model"]
        )
        assert all(torch.equal(weights[k], source[k]) for k in weights)


# --- Average pooling ---------------------------------------------------------------------------


def test_average_pooling_matches_timm_global_pool_avg():
    shape = dict(patch_size=4, in_chans=3, num_classes=10, embed_dim=48, depth=2, num_heads=3)
    torch.manual_seed(0)
    reference = TimmViT(img_size=16, global_pool="avg", **shape).eval()
    ours = VisionTransformer(image_size=16, global_pool="avg", **shape).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)
        token = VisionTransformer(image_size=16, **shape).eval()
        token.load_state_dict(ours.state_dict(), strict=False)
        assert not torch.allclose(token(x), ours(x))  # a different readout


def test_average_pooling_ignores_the_class_token_and_its_attention_shows_the_patches():
    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=16,
        patch_size=4,
        in_chans=1,
        num_classes=3,
        embed_dim=16,
        depth=1,
        num_heads=2,
        global_pool="avg",
    ).eval()
    x = torch.randn(2, 1, 16, 16)
    rollout = attention_rollout(model.attention_maps(x))
    readout = model.readout_attention(rollout)
    torch.testing.assert_close(readout, rollout[:, 1:, 1:].mean(dim=1))
    assert readout.shape == (2, 16)


# --- Settings and presets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "sentence"),
    [
        (
            "augment.randaugment_magnitude=40",
            "augment.randaugment_magnitude=40 must be a number from 0 to 30",
        ),
        ("augment.random_erasing=1.5", "augment.random_erasing=1.5 must be in [0, 1)"),
        ("augment.mixup_alpha=-1", "augment.mixup_alpha=-1 must be a number from 0 to 100"),
        ("augment.repeats=3", "trainer.batch_size=64 is not divisible by augment.repeats=3"),
        (
            "trainer.accumulate_steps=0",
            "trainer.accumulate_steps=0 must be a whole number from 1 to 4,096",
        ),
        ("trainer.ema_decay=1.0", "trainer.ema_decay=1.0 must be in (0, 1)"),
        ("model.global_pool=max", "model.global_pool='max' is not known"),
        (
            "scheduler=step scheduler.step_epochs=0",
            "scheduler.step_epochs=0 must be a whole number from 1 to 100,000",
        ),
        ("scheduler=step scheduler.gamma=0", "scheduler.gamma=0 must be in (0, 1]"),
    ],
)
def test_bad_recipe_settings_are_named(override, sentence):
    with pytest.raises(
        ConfigError, match=sentence.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        check_config(compose_config(override.split()))


# experiment/_*.yaml are bases the presets build on (_gpu_recipe), not presets.
PRESETS = sorted(p.stem for p in (CONFIGS / "experiment").glob("[!_]*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_every_experiment_preset_composes_and_passes_the_checks(name):
    cfg = compose_config([f"+experiment={name}"])
    check_config(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_trains_end_to_end_on_the_embedded_data(name, tmp_path):
    """Each preset's recipe (augmentations, EMA, schedule, image size) on the digits, with a
    1-block model and one epoch so that it takes seconds on a CPU."""
    shrink = [
        "dataset=digits",
        *TINY_RUN,
        "trainer.epochs=1",
        "trainer.compile=false",
        "trainer.visualize=false",
        "trainer.batch_size=64",
    ]
    cfg = compose_config([f"+experiment={name}", *shrink])
    train(cfg, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and 0 <= summary["test_acc"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_trains_its_own_model_for_a_step(name):
    """The preset's own model (shape, image size, channels), optimizer, schedule and
    augmentation, for two steps on a few random images of its size: the end-to-end test above
    replaces the model with a small one to stay fast."""
    cfg = compose_config([f"+experiment={name}"])
    channels = 1 if cfg.dataset.name in ("mnist", "fashion_mnist", "digits") else 3
    classes = 100 if cfg.dataset.name == "cifar100" else 43 if cfg.dataset.name == "gtsrb" else 10
    data = SimpleNamespace(channels=channels, class_names=[str(c) for c in range(classes)])
    model = build_model(cfg.model, data.channels, len(data.class_names))
    size, aug = cfg.model.image_size, cfg.augment
    images = torch.randint(0, 256, (8, channels, size, size), dtype=torch.uint8, generator=gen(0))
    loader = BatchLoader(
        Split(images, torch.arange(8) % classes),
        4,
        size,
        [0.5] * channels,
        [0.25] * channels,
        torch.device("cpu"),
        shuffle=True,
        augment=BatchAugment(
            crop_pixels(aug.crop_padding, cfg.dataset.augment.crop_fraction, size),
            aug.horizontal_flip,
            aug.randaugment_ops,
            aug.randaugment_magnitude,
            aug.random_erasing,
        ),
        mix=MixBatch(classes, aug.mixup_alpha, aug.cutmix_alpha, aug.mix_prob),
        repeats=aug.repeats,
    )
    optimizer = build_optimizer(instantiate(cfg.optimizer), model, torch.device("cpu"))
    scheduler = instantiate(cfg.scheduler)(optimizer, steps_per_epoch=2, epochs=cfg.trainer.epochs)
    before = model.head.weight.detach().clone()
    stats = train_one_epoch(
        model,
        loader,
        optimizer,
        scheduler,
        torch.device("cpu"),
        label_smoothing=cfg.trainer.label_smoothing,
    )
    assert stats.images == 8 and math.isfinite(stats.loss)
    assert not torch.equal(model.head.weight, before)


def test_the_recipe_presets_cover_every_dataset_the_issue_names():
    assert {"mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "gtsrb", "digits"} <= set(
        PRESETS
    )
    for name in ("cifar10", "cifar100"):
        cfg = compose_config([f"+experiment={name}"])
        assert cfg.dataset.name == name and cfg.trainer.ema and cfg.augment.randaugment_ops > 0
