"""Every fast path the CPU can run, against its plain twin: bf16 autocast against fp32,
torch.compile against eager (with EMA, accumulation and bf16; in one process and under DDP on
gloo), fused AdamW against the unfused one.

Each pair is run from the same seed on the same batches. A fast path must land near its twin (it
computes the same thing), and where it rounds differently (bf16) it must also not land exactly on
it, which would mean the fast path was silently not taken. torch.compile is also held to one
training graph for the whole run: training drops its last partial batch (src/data/loaders.py), so
every training step has the same shape and nothing is recompiled after the first step.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from safetensors.torch import load_file

import src.training.fit
import src.training.loops
from src.data import BatchLoader, load_dataset
from src.model.build import build_model
from src.model.vit import VisionTransformer
from src.training.device import autocast, resolve_precision, seed_everything
from src.training.loops import train_one_epoch
from src.training.optim import build_optimizer, constant, finetune_lr_scale, warmup_cosine
from src.training.run import train
from tests.conftest import TINY_RUN, compose_config, torchrun
from tests.helpers.graph_log import count_graphs_per_call

CPU = torch.device("cpu")

# TINY_RUN, learning fast enough in a few steps for the runs to move away from their start, and
# evaluated in batches of 128: 270 validation images make batches of 128, 128 and 14.
SHORT_RUN = [
    *TINY_RUN,
    "trainer.visualize=false",
    "scheduler=constant",
    "optimizer.lr=3e-3",
    "trainer.eval_batch_size=128",
]
TRAIN_STEPS = 1257 // 64  # batches in an epoch: the last partial one is dropped


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        image_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=1, num_heads=2
    )


@functools.cache
def digit_batches(count: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` shuffled training batches of 64 digits, as the model sees them."""
    data = load_dataset(compose_config().dataset)
    loader = BatchLoader(data.train, 64, 16, data.mean, data.std, CPU, shuffle=True, seed=0)
    return [batch for batch, _ in zip(loader, range(count))]


@pytest.fixture
def fresh_dynamo():
    """torch.compile's caches emptied before and after: each test compiles from scratch."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def train_steps(
    model: VisionTransformer,
    precision: torch.dtype | None,
    optimizer: torch.optim.Optimizer | None = None,
) -> list[float]:
    """One optimizer step per batch of ``digit_batches()``, through the engine's training loop;
    returns each step's loss."""
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = constant(optimizer, steps_per_epoch=1, epochs=1)
    return [
        train_one_epoch(model, [batch], optimizer, scheduler, CPU, precision).loss
        for batch in digit_batches()
    ]


def flat(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([weights[name].float().flatten() for name in sorted(weights)])


def assert_moved_alike(
    got: dict, expected: dict, start: dict, share: float, model: torch.nn.Module | None = None
) -> None:
    """The model (``model``, or the tiny ViT) with the weights ``got`` gives logits that differ from
    those with ``expected`` by less than ``share`` of how far training moved them from ``start``'s.
    Logits, not weights: Adam moves weights that do not change the output (the attention keys'
    bias) by the sign of rounding noise, which is the same in no two twins."""
    model = (model or tiny_vit()).eval()
    images, _ = digit_batches()[0]

    @torch.no_grad()
    def logits(weights: dict) -> torch.Tensor:
        model.load_state_dict(weights)
        return model(images)

    moved = (logits(expected) - logits(start)).norm()
    apart = (logits(got) - logits(expected)).norm()
    assert moved > 0 and apart <= share * moved, f"apart {apart:.3g} vs moved {moved:.3g}"


def initial_model(overrides: list[str]) -> VisionTransformer:
    """The model a run starts from, as train.py builds it: seeded, then the data, then the model."""
    cfg = compose_config(overrides)
    seed_everything(cfg.seed)
    data = load_dataset(cfg.dataset)
    return build_model(cfg.model, data.channels, len(data.class_names))


def run(run_dir: Path, overrides: list[str]) -> tuple[pd.DataFrame, dict, dict]:
    """train.py's train() in ``run_dir``: its metrics, summary and last checkpoint."""
    train(compose_config(overrides), run_dir)
    return read_run(run_dir)


def read_run(run_dir: Path) -> tuple[pd.DataFrame, dict, dict]:
    return (
        pd.read_csv(run_dir / "metrics.csv"),
        json.loads((run_dir / "summary.json").read_text()),
        torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True),
    )


def ema_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in checkpoint["ema"].items() if k != "n_averaged"}


def assert_metrics_close(
    got: pd.DataFrame, expected: pd.DataFrame, rtol: float, columns: list[str]
) -> None:
    assert got["step"].tolist() == expected["step"].tolist()
    for column in columns:
        loss = column.endswith("loss")
        pd.testing.assert_series_equal(
            got[column],
            expected[column],
            check_exact=False,
            rtol=rtol if loss else 0,
            atol=0 if loss else 0.03,  # accuracy: 8 of 270 images
        )


def record_logits_dtypes(monkeypatch) -> list[torch.dtype]:
    """Records the dtype of the logits of every loss computed from now on."""
    seen: list[torch.dtype] = []
    real = F.cross_entropy

    def recording(logits, *args, **kwargs):
        seen.append(logits.dtype)
        return real(logits, *args, **kwargs)

    monkeypatch.setattr(src.training.loops.F, "cross_entropy", recording)
    return seen


def record_autocast_dtypes(monkeypatch) -> list[torch.dtype | None]:
    """Records the dtype the engine's training and evaluation loops ask autocast for, per batch."""
    seen: list[torch.dtype | None] = []
    real = src.training.loops.autocast

    def recording(device, dtype):
        seen.append(dtype)
        return real(device, dtype)

    monkeypatch.setattr(src.training.loops, "autocast", recording)
    return seen


def assert_compiled_once(calls: list[tuple[str, int]]) -> None:
    """One graph for training, made in the first epoch (every training batch has one shape), and
    at most two for evaluation: eval mode without gradients is a graph of its own, and a partial
    last batch may add one with a dynamic batch size."""
    train_graphs = [n for phase, n in calls if phase == "train"]
    eval_graphs = [n for phase, n in calls if phase == "eval"]
    assert len(train_graphs) >= 2, calls
    assert train_graphs[0] == 1 and sum(train_graphs[1:]) == 0, calls
    assert 1 <= sum(eval_graphs) <= 2, calls


# --- bf16 autocast ------------------------------------------------------------------------------


def test_bf16_autocast_computes_in_bf16_and_its_logits_stay_near_fp32():
    model = tiny_vit().eval()
    images, _ = digit_batches()[0]
    seen = {}
    model.blocks[0].attn.qkv.register_forward_hook(lambda m, i, out: seen.update(qkv=out.dtype))
    with torch.no_grad():
        fp32 = model(images)
        assert seen["qkv"] == torch.float32
        with autocast(CPU, resolve_precision("bf16", CPU)):
            bf16 = model(images)
    assert seen["qkv"] == bf16.dtype == torch.bfloat16  # the matmuls ran in bf16
    scale = fp32.abs().max()
    difference = (bf16.float() - fp32).abs().max()
    assert 1e-4 * scale < difference < 5e-2 * scale, (difference, scale)  # bf16 keeps ~3 digits


def test_bf16_training_steps_follow_fp32():
    fp32_model, bf16_model = tiny_vit(), tiny_vit()
    start = {k: v.clone() for k, v in fp32_model.state_dict().items()}
    fp32 = train_steps(fp32_model, None)
    bf16 = train_steps(bf16_model, torch.bfloat16)
    assert fp32 != bf16
    assert bf16 == pytest.approx(fp32, rel=1e-3)
    assert_moved_alike(bf16_model.state_dict(), fp32_model.state_dict(), start, share=0.1)


@pytest.mark.slow
def test_a_bf16_run_stays_near_the_fp32_run(tmp_path, monkeypatch):
    """train.py end to end: every training step computes its logits in bf16, validation runs
    under bf16 autocast too (the final test runs in plain fp32, as inference does), the results
    stay near fp32's, and the run records its precision."""
    fp32, _, fp32_last = run(tmp_path / "fp32", SHORT_RUN + ["trainer.epochs=1"])
    logits = record_logits_dtypes(monkeypatch)
    asked = record_autocast_dtypes(monkeypatch)
    bf16, summary, bf16_last = run(
        tmp_path / "bf16", SHORT_RUN + ["trainer.epochs=1", "trainer.precision=bf16"]
    )
    assert summary["status"] == "completed" and summary["precision"] == "bfloat16"
    assert logits.count(torch.bfloat16) == TRAIN_STEPS  # evaluation hands the loss fp32 logits
    assert asked == [torch.bfloat16] * (TRAIN_STEPS + 3) + [None] * 3  # 3 val, then 3 test batches
    for column in ("train_loss", "val_loss"):
        assert bf16[column][0] != fp32[column][0], column
    assert_metrics_close(bf16, fp32, 1e-3, ["train_loss", "val_loss", "train_acc", "val_acc"])
    model = initial_model(SHORT_RUN)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    assert_moved_alike(bf16_last["model"], fp32_last["model"], start, share=0.1, model=model)


# --- torch.compile ------------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_training_matches_eager_with_ema_accumulation_and_bf16(
    tmp_path, monkeypatch, fresh_dynamo
):
    """Same losses, accuracies, weights and EMA weights as eager, from one training graph; the
    run still saves the plain (timm) parameter names, not torch.compile's wrapper's."""
    overrides = SHORT_RUN + [
        "trainer.epochs=2",
        "trainer.ema=true",
        "trainer.ema_decay=0.9",
        "trainer.accumulate_steps=2",
        "trainer.precision=bf16",
    ]
    eager, _, eager_last = run(tmp_path / "eager", overrides)
    calls = count_graphs_per_call(src.training.fit, monkeypatch.setattr)
    logits = record_logits_dtypes(monkeypatch)
    compiled, summary, compiled_last = run(
        tmp_path / "compiled", [*overrides, "trainer.compile=true"]
    )

    assert summary["status"] == "completed"
    assert_compiled_once(calls)
    assert logits.count(torch.bfloat16) == 2 * TRAIN_STEPS  # autocast reaches the compiled model
    assert_metrics_close(
        compiled,
        eager,
        5e-4,
        ["train_loss", "val_loss", "ema_val_loss", "train_acc", "val_acc", "ema_val_acc"],
    )
    model = initial_model(overrides)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    assert_moved_alike(compiled_last["model"], eager_last["model"], start, 0.01, model)
    assert_moved_alike(ema_weights(compiled_last), ema_weights(eager_last), start, 0.01, model)
    assert compiled_last["ema"]["n_averaged"] == eager_last["ema"]["n_averaged"] == 20
    names = set(load_file(tmp_path / "compiled" / "weights" / "best.safetensors"))
    assert names == set(eager_last["model"]) and "cls_token" in names


# --- fused AdamW --------------------------------------------------------------------------------


def test_fused_adamw_on_the_cpu_equals_the_unfused_one():
    """torch's fused CPU kernel, on build_optimizer's groups (no decay on norms and biases,
    layer-wise learning rates) under a changing learning rate: given the same gradients, step by
    step, the same weights and moments as the unfused (foreach) AdamW."""
    models, optimizers, schedulers = [], [], []
    for fused in (False, True):
        model = tiny_vit()
        factory = functools.partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.05, fused=fused)
        optimizer = build_optimizer(factory, model, CPU, finetune_lr_scale(1, layer_decay=0.75))
        models.append(model), optimizers.append(optimizer)
        schedulers.append(warmup_cosine(optimizer, steps_per_epoch=4, epochs=1, warmup_epochs=0.5))
    plain, fused = optimizers
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    assert len({group["lr"] for group in fused.param_groups}) > 1
    for images, labels in digit_batches():
        F.cross_entropy(models[0](images), labels).backward()
        torch.nn.utils.clip_grad_norm_(models[0].parameters(), 1.0)
        for mine, theirs in zip(models[1].parameters(), models[0].parameters()):
            mine.grad = theirs.grad.clone()
        for optimizer, scheduler in zip(optimizers, schedulers):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
    start = tiny_vit().state_dict()
    assert not torch.equal(flat(models[0].state_dict()), flat(start))
    torch.testing.assert_close(models[1].state_dict(), models[0].state_dict(), atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(
        fused.state_dict()["state"], plain.state_dict()["state"], atol=1e-12, rtol=1e-5
    )


# --- torch.compile under DDP (gloo) -------------------------------------------------------------


@pytest.mark.slow
def test_compiled_ddp_on_gloo_matches_eager_ddp(tmp_path):
    overrides = SHORT_RUN + ["trainer.epochs=2"]
    runs = {}
    for mode in ("eager", "compiled"):
        result = torchrun(
            "tests/helpers/counted_train.py",
            str(tmp_path / f"{mode}_graphs"),
            f"hydra.run.dir={tmp_path / mode}",
            *overrides,
            f"trainer.compile={mode == 'compiled'}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs[mode] = read_run(tmp_path / mode)
    (eager, _, eager_last), (compiled, summary, compiled_last) = runs["eager"], runs["compiled"]

    assert summary["status"] == "completed" and summary["processes"] == 2
    for rank in (0, 1):
        counts = {
            mode: json.loads((tmp_path / f"{mode}_graphs" / f"rank{rank}.json").read_text())
            for mode in runs
        }
        assert_compiled_once(counts["compiled"])
        assert counts["eager"] and not any(n for _, n in counts["eager"])
    assert compiled["step"].tolist() == [9, 18]  # 629 images per process: 9 full batches of 64
    assert_metrics_close(compiled, eager, 1e-4, ["train_loss", "val_loss", "train_acc", "val_acc"])
    model = initial_model(overrides)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    assert_moved_alike(compiled_last["model"], eager_last["model"], start, 0.01, model)
