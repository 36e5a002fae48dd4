"""Everything a run trains with, built from its config: the device and precision, the data, the
model (from scratch, pretrained weights or the run's checkpoint), the optimizer and schedule."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel

from src import distributed
from src.data import (
    BatchAugment,
    BatchLoader,
    Dataset,
    MixBatch,
    StreamLoader,
    load_dataset,
    make_batches,
    worker_count,
)
from src.data.loaders import images_per_epoch, training_steps
from src.data.sizes import crop_pixels, resize_note
from src.model.build import build_model
from src.model.pretrained import freeze_backbone, load_pretrained
from src.model.vit import VisionTransformer, count_parameters
from src.runs.card import model_card
from src.runs.folder import RunFolder
from src.training.checkpoint import TrainingState
from src.training.checks import warmup_note
from src.training.device import (
    configure_backend,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from src.training.ema import WeightAverage
from src.training.loops import optimizer_steps
from src.training.optim import build_optimizer, finetune_lr_scale

log = logging.getLogger("train")


@dataclass
class Training:
    """Everything ``fit`` and ``test_and_report`` work with, made by ``build``."""

    device: torch.device
    precision: torch.dtype | None
    data: Dataset
    net: torch.nn.Module  # what runs: the model, under DDP and torch.compile when asked
    state: TrainingState  # what a checkpoint holds: the model, optimizer, schedule, EMA, ...
    val_batches: BatchLoader | StreamLoader
    test_batches: BatchLoader | StreamLoader
    started: float  # when this process began the run (perf_counter)
    seconds_before: float  # the training time of the run before this resume

    def seconds(self) -> float:
        """The run's time so far: training, validation, saving and testing, across resumes."""
        return self.seconds_before + time.perf_counter() - self.started

    @property
    def model(self) -> VisionTransformer:
        return self.state.model


def build(cfg: DictConfig, run: RunFolder, checkpoint: dict | None) -> Training:
    """Device, data, model, optimizer and schedule; from the checkpoint when resuming."""
    started = time.perf_counter()
    device = distributed.init(resolve_device(cfg.trainer.device))  # torchrun: this rank's device
    precision = resolve_precision(cfg.trainer.precision, device)
    configure_backend(device)
    seed_everything(
        cfg.seed + distributed.rank()
    )  # each process its own dropout (DDP syncs weights)

    with distributed.main_first():  # rank 0 downloads, decodes and caches; the others read that
        data = load_dataset(cfg.dataset)
    model = build_model(cfg.model, data.channels, len(data.class_names))
    data = _start_from_weights(cfg, run, model, data, checkpoint)
    model = model.to(device)
    net = _wrapped(cfg, model, device)
    ema = WeightAverage(model, cfg.trainer.ema_decay) if cfg.trainer.ema else None

    loader_args = dict(
        image_size=cfg.model.image_size,
        mean=data.mean,
        std=data.std,
        device=device,
        num_workers=worker_count(cfg.trainer.num_workers),
        bad_images=cfg.dataset.get("bad_images", "skip"),
    )
    train_batches = _train_batches(cfg, data, loader_args)
    lr_scale = finetune_lr_scale(
        cfg.model.depth, cfg.finetune.backbone_lr_scale, cfg.finetune.layer_decay
    )
    optimizer = build_optimizer(instantiate(cfg.optimizer), model, device, lr_scale)
    scheduler = instantiate(cfg.scheduler)(
        optimizer,
        steps_per_epoch=optimizer_steps(len(train_batches), cfg.trainer.accumulate_steps),
        epochs=cfg.trainer.epochs,
    )
    state = TrainingState(model, optimizer, scheduler, ema, train_batches, cfg.trainer.epochs)
    if checkpoint is not None:
        state.load_state_dict(checkpoint)
    return Training(
        device,
        precision,
        data,
        net,
        state,
        val_batches=make_batches(data.val, cfg.trainer.eval_batch_size, **loader_args),
        test_batches=make_batches(data.test, cfg.trainer.eval_batch_size, **loader_args),
        started=started,
        seconds_before=run.summary.get("train_seconds", 0.0) if checkpoint else 0.0,
    )


def _start_from_weights(
    cfg: DictConfig,
    run: RunFolder,
    model: VisionTransformer,
    data: Dataset,
    checkpoint: dict | None,
) -> Dataset:
    """model.pretrained's weights (a resumed run has its own in last.pt) and the normalisation
    they were trained with, which model.json records too; then the frozen backbone, if asked."""
    if cfg.model.pretrained and checkpoint is None:
        run.update_summary(pretrained=load_pretrained(model, cfg.model.pretrained).summary())
    pretrained = run.summary.get("pretrained", {}) if cfg.model.pretrained else {}
    if "mean" in pretrained:
        data = replace(data, mean=pretrained["mean"], std=pretrained["std"])
    if cfg.finetune.freeze_backbone:
        freeze_backbone(model)
    return data


def _wrapped(cfg: DictConfig, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """What runs: DDP and torch.compile wrap the module; the unwrapped model is what is saved."""
    net = model
    if distributed.active():  # gradients averaged across the processes at every step
        device_ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=device_ids)
    return torch.compile(net, mode=cfg.trainer.compile_mode) if cfg.trainer.compile else net


def _train_batches(cfg: DictConfig, data: Dataset, loader_args: dict) -> BatchLoader | StreamLoader:
    """The training split's batches, shuffled and augmented as ``cfg.augment`` says."""
    aug = cfg.augment
    return make_batches(
        data.train,
        cfg.trainer.batch_size,
        shuffle=True,
        augment=BatchAugment(
            crop_pixels(aug.crop_padding, cfg.dataset.augment.crop_fraction, cfg.model.image_size),
            aug.horizontal_flip,
            aug.randaugment_ops,
            aug.randaugment_magnitude,
            aug.random_erasing,
        ),
        mix=MixBatch(len(data.class_names), aug.mixup_alpha, aug.cutmix_alpha, aug.mix_prob),
        repeats=aug.repeats,
        seed=cfg.seed,
        **loader_args,
    )


def describe(cfg: DictConfig, run: RunFolder, t: Training, resuming: bool) -> None:
    """model.json, the run's setup in summary.json, and one line of it in the log."""
    data, num_params = t.data, count_parameters(t.model)
    run.write_model_card(model_card(cfg, t.model, data))
    run.update_summary(
        device=str(t.device),
        precision=str(t.precision or torch.float32).removeprefix("torch."),
        num_params=num_params,
        classes=data.class_names,
        split_sizes={"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        processes=distributed.world_size(),
        global_batch_size=images_per_step(cfg, data),
    )
    log.info(
        "%s: %d train / %d val / %d test images, %d classes | %s, %s parameters | %s, %s%s",
        data.name,
        len(data.train),
        len(data.val),
        len(data.test),
        len(data.class_names),
        cfg.model.name,
        f"{num_params:,}",
        t.device,
        run.summary["precision"],
        f" | resuming after epoch {t.state.epoch}" if resuming else "",
    )
    notes = [
        resize_note(cfg.dataset, cfg.model, data.image_size),
        None if resuming else warmup_note(cfg),  # a resumed run keeps its checkpoint's schedule
    ]
    for note in notes:
        if note and distributed.is_main():
            log.warning(note)


def images_per_step(cfg: DictConfig, data: Dataset) -> int:
    """The images of one optimizer step, over every process. A batch larger than a process's
    share of the training images takes that share whole, once an epoch: said, and counted so."""
    share = images_per_epoch(len(data.train), shuffle=True, sharded=True)
    per_process = min(cfg.trainer.batch_size, share)
    if per_process < cfg.trainer.batch_size and distributed.is_main():
        log.warning(
            "trainer.batch_size=%d is more than the %d training images %s: every step takes "
            "those %d, one step an epoch",
            cfg.trainer.batch_size,
            share,
            "each process has" if distributed.active() else "there are",
            share,
        )
    batches = min(cfg.trainer.accumulate_steps, training_steps(share, per_process))
    return per_process * batches * distributed.world_size()
