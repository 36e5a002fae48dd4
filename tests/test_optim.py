"""Weight-decay groups and the learning-rate schedules."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from src.errors import ConfigError
from src.model.vit import VisionTransformer
from src.training.optim import build_optimizer, constant, param_groups, step, warmup_cosine


def test_no_weight_decay_on_norms_biases_position_embedding_and_class_token():
    model = VisionTransformer(
        image_size=8, patch_size=2, in_chans=1, num_classes=3, embed_dim=16, depth=2, num_heads=2
    )
    decay, no_decay = param_groups(model, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {
        "pos_embed",
        "cls_token",
        "norm.weight",
        "head.bias",
        "blocks.0.norm1.weight",
    } <= not_decayed
    assert {"patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "head.weight"} <= decayed
    assert decayed | not_decayed == set(names.values())


def test_fixed_position_embedding_is_not_optimised():
    model = VisionTransformer(
        image_size=8,
        patch_size=2,
        in_chans=1,
        num_classes=3,
        embed_dim=16,
        depth=1,
        num_heads=2,
        pos_embed="sincos",
    )
    groups = param_groups(model, 0.05)
    assert all(p is not model.pos_embed for g in groups for p in g["params"])


@pytest.mark.parametrize("lr", [0.0, -1e-3, 5.0])
def test_out_of_range_learning_rate_is_refused(lr):
    with pytest.raises(ConfigError, match=f"optimizer.lr={lr}"):
        build_optimizer(
            partial(torch.optim.AdamW, lr=lr), torch.nn.Linear(2, 2), torch.device("cpu")
        )


def lrs(make_scheduler, steps: int, base_lr: float = 1.0) -> list[float]:
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=base_lr)
    sched = make_scheduler(opt)
    seen = []
    for _ in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return seen


def test_warmup_cosine_warms_up_per_step_then_decays_to_min_lr():
    seen = lrs(
        lambda o: warmup_cosine(o, steps_per_epoch=10, epochs=10, warmup_epochs=2, min_lr=0.01), 100
    )
    warmup = seen[:20]
    assert warmup == sorted(warmup) and warmup[0] == pytest.approx(1 / 20)
    assert seen[20] == pytest.approx(1.0)
    decay = seen[20:]
    assert decay == sorted(decay, reverse=True)
    assert seen[60] == pytest.approx(0.01 + 0.99 * 0.5, abs=1e-6)  # half way down the cosine
    assert seen[-1] == pytest.approx(0.01, abs=1e-3)


def test_step_schedule_divides_every_step_epochs():
    seen = lrs(lambda o: step(o, steps_per_epoch=5, epochs=10, step_epochs=3, gamma=0.1), 50)
    assert seen[14] == pytest.approx(1.0) and seen[15] == pytest.approx(0.1)
    assert seen[30] == pytest.approx(0.01)


def test_constant_schedule_with_warmup():
    seen = lrs(lambda o: constant(o, steps_per_epoch=4, epochs=5, warmup_epochs=1), 20)
    assert seen[:4] == pytest.approx([0.25, 0.4375, 0.625, 0.8125])  # linear from lr/4
    assert seen[4:] == pytest.approx([1.0] * 16)


def test_warmup_takes_at_most_half_the_run_so_a_short_run_reaches_its_learning_rate():
    """Issue 32: trainer.epochs=3 with the default 5 warmup epochs warmed up until the last step
    (the rate peaked at 3.4e-4 of 5e-4); warmup now ends half way, then the cosine decays."""
    seen = lrs(
        lambda o: warmup_cosine(o, steps_per_epoch=10, epochs=3, warmup_epochs=5, min_lr=0.01), 30
    )
    assert seen[:15] == sorted(seen[:15]) and seen[0] == pytest.approx(1 / 15)
    assert max(seen) == pytest.approx(1.0) and seen.index(max(seen)) == 15
    assert seen[15:] == sorted(seen[15:], reverse=True)
    for schedule in (constant, partial(step, step_epochs=30)):
        held = lrs(partial(schedule, steps_per_epoch=4, epochs=2, warmup_epochs=5), 8)
        assert held[4:] == pytest.approx([1.0] * 4)
    # a warmup that fits is untouched: the default run's schedule is the same as before
    fits = lrs(lambda o: warmup_cosine(o, steps_per_epoch=19, epochs=80, warmup_epochs=5), 100)
    assert fits.index(max(fits)) == 95


def test_a_warmup_longer_than_half_the_run_is_said_with_what_to_set(config):
    from src.training.checks import warmup_note

    note = warmup_note(config(["trainer.epochs=3", "optimizer.lr=5e-4"]))
    assert note == (
        "scheduler.warmup_epochs=5 would take most of this 3-epoch run (trainer.epochs=3), "
        "keeping the learning rate below optimizer.lr=0.0005 until its last step; it warms up "
        "over the first 1.5 epochs instead (50% of the run): to choose, set "
        "scheduler.warmup_epochs=0.3 (a tenth of the run) or 0 (none), or train longer"
    )
    assert "for most of it" in warmup_note(config(["trainer.epochs=8"]))
    for fits in ([], ["trainer.epochs=10"], ["trainer.epochs=3", "scheduler.warmup_epochs=0.3"]):
        assert warmup_note(config(fits)) is None


def test_training_says_once_at_the_start_that_warmup_was_shortened(tmp_path, caplog):
    import logging

    from src.training.run import train
    from tests.conftest import TINY_RUN, compose_config

    with caplog.at_level(logging.WARNING):
        train(compose_config([*TINY_RUN, "trainer.epochs=1"]), tmp_path / "run")
    said = [r.getMessage() for r in caplog.records if "scheduler.warmup_epochs" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("scheduler.warmup_epochs=5 would take most of")


def test_a_resumed_optimizer_keeps_the_kernels_chosen_for_its_new_device():
    """A run begun where Adam was not fused (say a CPU before fused CPU kernels, or foreach) and
    resumed where it is (a GPU) must use the fused kernels, though the checkpoint says otherwise."""
    from src.data import Split, make_batches
    from src.training.checkpoint import TrainingState

    model = torch.nn.Linear(3, 2)
    split = Split(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    batches = make_batches(
        split, 2, image_size=2, mean=[0.0], std=[1.0], device=torch.device("cpu"), shuffle=True
    )

    def state(**kernels):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, **kernels)
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0)
        return TrainingState(model, optimizer, scheduler, None, batches, epochs=2)

    before = state(foreach=True).state_dict()
    after = state(fused=True)
    after.load_state_dict(before)
    assert after.optimizer.param_groups[0]["fused"] is True
    assert not after.optimizer.param_groups[0]["foreach"]


def test_min_lr_scales_with_each_fine_tuning_group():
    """Issue 21: depth 12, lr 1e-4, layer_decay 0.65 put the embeddings at 3.7e-7, and the cosine
    then *raised* them to min_lr=1e-5. Each group now decays to min_lr x its own lr scale."""
    from src.training.optim import finetune_lr_scale

    model = VisionTransformer(
        image_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=8, depth=12, num_heads=2
    )
    scale = finetune_lr_scale(depth=12, layer_decay=0.65)
    opt = build_optimizer(partial(torch.optim.AdamW, lr=1e-4), model, torch.device("cpu"), scale)
    sched = warmup_cosine(opt, steps_per_epoch=10, epochs=10, warmup_epochs=1, min_lr=1e-5)
    seen = []
    for _ in range(100):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    seen.append([g["lr"] for g in opt.param_groups])
    for i, group in enumerate(opt.param_groups):
        top = 1e-4 * group["lr_scale"]
        decay = [lrs_[i] for lrs_ in seen[10:]]
        assert decay[0] == pytest.approx(top)
        assert decay == sorted(decay, reverse=True), (
            f"group {i} (scale {group['lr_scale']:.2g}) rises"
        )
        assert decay[-1] == pytest.approx(1e-5 * group["lr_scale"], rel=1e-6)
    lowest = min(opt.param_groups, key=lambda g: g["lr_scale"])
    assert lowest["lr_scale"] == pytest.approx(0.65**13)  # 3.7e-7 at the top of its cosine


def test_warmup_linear_warms_up_then_falls_in_a_straight_line_to_min_lr():
    from src.training.optim import warmup_linear

    seen = lrs(
        lambda o: warmup_linear(o, steps_per_epoch=10, epochs=10, warmup_epochs=2, min_lr=0.01), 101
    )
    assert seen[:20] == sorted(seen[:20]) and seen[0] == pytest.approx(1 / 20)
    assert seen[20] == pytest.approx(1.0)
    assert seen[60] == pytest.approx(0.01 + 0.99 * 0.5)  # half way down, on the line
    steps = [a - b for a, b in zip(seen[20:100], seen[21:101])]
    assert steps == pytest.approx([0.99 / 80] * 80)  # the same step down every time
    assert seen[100] == pytest.approx(0.01)


def test_warmup_linear_brings_each_fine_tuning_group_to_its_share_of_min_lr():
    from src.training.optim import finetune_lr_scale, warmup_linear

    model = VisionTransformer(
        image_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=8, depth=4, num_heads=2
    )
    scale = finetune_lr_scale(depth=4, layer_decay=0.5)
    opt = build_optimizer(partial(torch.optim.AdamW, lr=1e-3), model, torch.device("cpu"), scale)
    sched = warmup_linear(opt, steps_per_epoch=5, epochs=4, warmup_epochs=0, min_lr=1e-4)
    for _ in range(20):
        opt.step()
        sched.step()
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(1e-4 * group["lr_scale"], rel=1e-6)
