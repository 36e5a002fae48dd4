"""Train a Vision Transformer from scratch.

    python train.py                                   # embedded digits, about a minute on a CPU
    python train.py model=vit_tiny trainer.epochs=10 optimizer.lr=5e-4
    python train.py --multirun model.depth=2,4 optimizer.lr=1e-3,5e-4
    python train.py resume=outputs/2026-11-23/10-04-55 [trainer.epochs=120]

compose config -> check it -> seed -> build data, model, optimizer, scheduler (or restore them from
the run's checkpoint) -> fit (best epoch chosen on validation) -> test the best weights -> write the
run folder (see README, "The run folder").
"""

from __future__ import annotations

import logging
import platform
import time
import warnings
from datetime import datetime
from pathlib import Path

import hydra
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from src import distributed, tracking
from src.artifacts import RunFolder
from src.checks import check_config
from src.data import BatchAugment, Dataset, MixBatch, load_dataset, make_batches, worker_count
from src.ema import WeightAverage
from src.engine import (
    Diverged,
    configure_backend,
    evaluate,
    optimizer_steps,
    resolve_device,
    resolve_precision,
    rng_state,
    seed_everything,
    set_rng_state,
    train_one_epoch,
)
from src.errors import ConfigError
from src.fileio import write_json
from src.model import VisionTransformer, count_parameters
from src.optim import build_optimizer, finetune_lr_scale
from src.plots import plot_curves
from src.pretrained import freeze_backbone, load_pretrained
from src.report import write_report
from src.resume import check_resumable, load_checkpoint, merge_overrides, saved_overrides
from src.stopping import StopRequest, TrainingStopped

log = logging.getLogger("train")

# A resumed run writes into its own folder, and Hydra leaves that folder's .hydra/ as it was;
# under torchrun every rank names the same dated folder, and only rank 0 writes .hydra/ there.
OmegaConf.register_new_resolver(
    "if_resuming", lambda resume, then, otherwise: then if resume else otherwise, replace=True
)
OmegaConf.register_new_resolver("shared_now", distributed.shared_now, replace=True)
OmegaConf.register_new_resolver(
    "hydra_subdir", lambda resume: None if resume or not distributed.is_main() else ".hydra",
    replace=True,
)


class UserError(CompactHydraException):
    """Shown by Hydra as its message alone, without a traceback."""


def model_kwargs(model_cfg: DictConfig, data: Dataset) -> dict:
    """VisionTransformer's arguments: the model config (less its name) plus what the data decides."""
    kwargs = OmegaConf.to_container(model_cfg, resolve=True)
    for key in ("name", "pretrained"):  # not the architecture's
        kwargs.pop(key, None)
    for key, value in (("in_chans", data.channels), ("num_classes", len(data.class_names))):
        if kwargs.get(key, value) != value:
            raise ConfigError(
                f"model.{key}={kwargs[key]} does not match the dataset, which has {value}; drop "
                f"the override: the model takes {key} from the data."
            )
    return {**kwargs, "in_chans": data.channels, "num_classes": len(data.class_names)}


def build_model(model_cfg: DictConfig, data: Dataset) -> VisionTransformer:
    return VisionTransformer(**model_kwargs(model_cfg, data))


def model_card(cfg: DictConfig, model: VisionTransformer, data: Dataset) -> dict:
    """model.json: enough to rebuild the model and preprocess an image, without the config."""
    return {
        "model_name": cfg.model.name,
        "model": model_kwargs(cfg.model, data),
        "dataset": data.name,
        "class_names": data.class_names,
        "image_size": cfg.model.image_size,
        "channels": data.channels,
        "mean": data.mean,
        "std": data.std,
        "num_params": count_parameters(model),
        "weights": "weights/best.safetensors",
    }


def train(cfg: DictConfig, run_dir: str | Path) -> float:
    """Run one training job into ``run_dir`` (or resume it there); returns the best validation accuracy."""
    run_dir = Path(run_dir)
    try:  # Settings first: a bad one stops the run before any data is read.
        check_config(cfg)
        tracker = tracking.from_config(cfg, run_dir)  # cfg.logger; a missing package stops here
        checkpoint = load_checkpoint(run_dir) if cfg.resume else None
        if checkpoint is not None and checkpoint["epoch"] >= cfg.trainer.epochs:
            raise ConfigError(
                f"resume={run_dir}: the run has already trained {checkpoint['epoch']} epochs; "
                f"pass trainer.epochs=N with N above {checkpoint['epoch']} to train it longer."
            )
    except ConfigError as err:
        if not cfg.resume and distributed.is_main():  # a resumed run's folder is left as it was
            write_json(run_dir / "summary.json", {"status": "failed", "error": str(err)})
        raise

    run = RunFolder(
        run_dir, resume_epoch=checkpoint["epoch"] if checkpoint else None,
        writes=distributed.is_main(), tracker=tracker,
    )
    now = datetime.now().isoformat(timespec="seconds")
    if checkpoint is None:
        run.update_summary(
            status="running", started_at=now, dataset=cfg.dataset.name, model=cfg.model.name,
            overrides=_overrides(),
        )
    else:
        resumes = run.summary.get("resumes", [])
        resumes.append({"at": now, "from_epoch": checkpoint["epoch"], "overrides": _overrides()})
        run.update_summary(status="running", resumes=resumes)
    try:
        with StopRequest() as stop:
            return _fit_and_test(cfg, run, checkpoint, stop)
    except (TrainingStopped, KeyboardInterrupt):
        run.update_summary(status="interrupted")
        raise
    except BaseException as err:
        run.update_summary(status="failed", error=str(err) or type(err).__name__)
        raise
    finally:
        run.close()


def _fit_and_test(cfg: DictConfig, run: RunFolder, checkpoint: dict | None, stop: StopRequest) -> float:
    started = time.perf_counter()
    seconds_before = run.summary.get("train_seconds", 0.0) if checkpoint else 0.0
    device = distributed.init(resolve_device(cfg.trainer.device))  # torchrun: this rank's device
    precision = resolve_precision(cfg.trainer.precision, device)
    configure_backend(device)
    seed_everything(cfg.seed)

    data = load_dataset(cfg.dataset)
    model = build_model(cfg.model, data)
    if cfg.model.pretrained and checkpoint is None:  # a resumed run has its weights in last.pt
        run.update_summary(pretrained=load_pretrained(model, cfg.model.pretrained).summary())
    if cfg.finetune.freeze_backbone:
        freeze_backbone(model)
    model = model.to(device)
    # torch.compile wraps the module; the unwrapped `model` is what gets saved.
    net = model
    if distributed.active():  # gradients averaged across the processes at every step
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    net = torch.compile(net, mode=cfg.trainer.compile_mode) if cfg.trainer.compile else net

    ema = WeightAverage(model, cfg.trainer.ema_decay) if cfg.trainer.ema else None

    loader_args = dict(
        image_size=cfg.model.image_size, mean=data.mean, std=data.std, device=device,
        num_workers=worker_count(cfg.trainer.num_workers),
    )
    aug = cfg.augment
    train_batches = make_batches(
        data.train,
        cfg.trainer.batch_size,
        shuffle=True,
        augment=BatchAugment(
            aug.crop_padding, aug.horizontal_flip, aug.randaugment_ops,
            aug.randaugment_magnitude, aug.random_erasing,
        ),
        mix=MixBatch(len(data.class_names), aug.mixup_alpha, aug.cutmix_alpha, aug.mix_prob),
        repeats=aug.repeats,
        seed=cfg.seed,
        **loader_args,
    )
    val_batches = make_batches(data.val, cfg.trainer.eval_batch_size, **loader_args)
    test_batches = make_batches(data.test, cfg.trainer.eval_batch_size, **loader_args)

    lr_scale = finetune_lr_scale(cfg.model.depth, cfg.finetune.backbone_lr_scale, cfg.finetune.layer_decay)
    optimizer = build_optimizer(instantiate(cfg.optimizer), model, device, lr_scale)
    accumulate = cfg.trainer.accumulate_steps
    scheduler = instantiate(cfg.scheduler)(
        optimizer, steps_per_epoch=optimizer_steps(len(train_batches), accumulate),
        epochs=cfg.trainer.epochs,
    )
    best = {"val_acc": -1.0, "val_loss": float("inf"), "epoch": 0, "weights": "model"}
    step, first_epoch = 0, 1
    if checkpoint is not None:
        _restore(
            checkpoint, model, optimizer, scheduler, ema, train_batches.generator, cfg.trainer.epochs
        )
        best, step, first_epoch = checkpoint["best"], checkpoint["step"], checkpoint["epoch"] + 1

    num_params = count_parameters(model)
    run.write_model_card(model_card(cfg, model, data))
    run.update_summary(
        device=str(device),
        precision=str(precision or torch.float32).removeprefix("torch."),
        num_params=num_params,
        classes=data.class_names,
        split_sizes={"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        processes=distributed.world_size(),
        global_batch_size=cfg.trainer.batch_size * accumulate * distributed.world_size(),
    )
    log.info(
        "%s: %d train / %d val / %d test images, %d classes | %s, %s parameters | %s, %s%s",
        data.name, len(data.train), len(data.val), len(data.test), len(data.class_names),
        cfg.model.name, f"{num_params:,}", device, run.summary["precision"],
        f" | resuming after epoch {first_epoch - 1}" if checkpoint else "",
    )

    show = cfg.trainer.progress and distributed.is_main()
    with logging_redirect_tqdm(), tqdm(
        range(first_epoch, cfg.trainer.epochs + 1), desc="epochs", unit="epoch", disable=not show
    ) as epochs:
        for epoch in epochs:
            epoch_start = time.perf_counter()
            with tqdm(
                total=len(train_batches), desc=f"epoch {epoch}", leave=False, disable=not show
            ) as steps:
                try:
                    train_stats = train_one_epoch(
                        net, train_batches, optimizer, scheduler, device, precision,
                        cfg.trainer.grad_clip, cfg.trainer.label_smoothing, accumulate, ema,
                        progress=steps,
                        stop_requested=lambda: distributed.any_rank(bool(stop), device),
                    )
                except Diverged as err:
                    raise ConfigError(
                        f"training diverged in epoch {epoch}: {err}; the usual cause is a learning "
                        f"rate too high for this model (optimizer.lr={cfg.optimizer.lr}), so lower "
                        "it, lengthen scheduler.warmup_epochs or keep trainer.grad_clip above 0; "
                        f"the best weights so far (epoch {best['epoch']}) are kept in "
                        "weights/best.safetensors."
                    ) from None
            if not train_stats.complete:  # the cut-short epoch is dropped; last.pt has the one before
                raise TrainingStopped(_stopped_message(stop, epoch, run))
            train_seconds = time.perf_counter() - epoch_start
            val_stats = evaluate(net, val_batches, device, precision)
            ema_stats = evaluate(ema.module, val_batches, device, precision) if ema else None
            step += optimizer_steps(len(train_batches), accumulate)

            row = {
                "epoch": epoch,
                "step": step,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": train_stats.loss,
                "train_acc": train_stats.acc,
                "val_loss": val_stats.loss,
                "val_acc": val_stats.acc,
                **({"ema_val_loss": ema_stats.loss, "ema_val_acc": ema_stats.acc} if ema else {}),
                "epoch_seconds": time.perf_counter() - epoch_start,
                "images_per_second": train_stats.images / train_seconds,
            }
            run.log_epoch(row)

            # Best on validation accuracy, ties broken by the lower validation loss; the EMA's
            # weights are candidates too.
            candidates = [("model", model, val_stats)] + ([("ema", ema.module, ema_stats)] if ema else [])
            for source, weights, stats in candidates:
                if (stats.acc, -stats.loss) > (best["val_acc"], -best["val_loss"]):
                    best = {"val_acc": stats.acc, "val_loss": stats.loss, "epoch": epoch, "weights": source}
                    run.save_best_weights(
                        weights, {"epoch": str(epoch), "val_acc": f"{stats.acc:.6f}", "weights": source}
                    )
            run.save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "epochs": cfg.trainer.epochs,
                    "step": step,
                    "best": best,
                    **({"ema": ema.state_dict()} if ema else {}),
                    "rng": rng_state(),
                    "data_generator": train_batches.generator.get_state(),
                }
            )
            run.update_summary(
                epochs_completed=epoch,
                best_val_acc=best["val_acc"],
                best_epoch=best["epoch"],
                best_weights=best.get("weights", "model"),  # "ema" when the average won
                train_seconds=seconds_before + time.perf_counter() - started,
            )
            epochs.set_postfix(
                loss=f"{train_stats.loss:.3f}", val_acc=f"{val_stats.acc:.3f}",
                best=f"{best['val_acc']:.3f}",
            )
            log.info(
                "epoch %d/%d  lr %.2e  train loss %.4f acc %.4f  val loss %.4f acc %.4f%s  (%.1fs)",
                epoch, cfg.trainer.epochs, row["lr"], train_stats.loss, train_stats.acc,
                val_stats.loss, val_stats.acc,
                f"  EMA val loss {ema_stats.loss:.4f} acc {ema_stats.acc:.4f}" if ema else "",
                row["epoch_seconds"],
            )
            if stop and epoch < cfg.trainer.epochs:  # asked to stop while validating or saving
                raise TrainingStopped(_stopped_message(stop, epoch + 1, run))

    run.save_figure("curves", plot_curves(run.frame(), title=f"{cfg.model.name} on {data.name}"))

    # Test the weights chosen on validation, read back from the file inference will use.
    if distributed.is_main():
        model.load_state_dict(load_file(run.best_weights_path, device=str(device)))
    distributed.broadcast_weights(model)
    test_stats = evaluate(net, test_batches, device, precision)
    run.tensorboard.add_scalar("test/acc", test_stats.acc, best["epoch"])
    run.tensorboard.add_scalar("test/loss", test_stats.loss, best["epoch"])
    per_class = write_report(
        run, model, data, device, precision, cfg.trainer.eval_batch_size, cfg.trainer.visualize
    ) if distributed.is_main() else {}
    run.update_summary(
        status="completed",
        test_acc=test_stats.acc,
        test_loss=test_stats.loss,
        **per_class,
        finished_at=datetime.now().isoformat(timespec="seconds"),
        train_seconds=seconds_before + time.perf_counter() - started,
        python=platform.python_version(),
        torch=torch.__version__,
    )
    run.log_hparams(
        hparams(cfg), {"hparam/best_val_acc": best["val_acc"], "hparam/test_acc": test_stats.acc}
    )
    log.info(
        "best epoch %d (%s weights): val acc %.4f | test acc %.4f, loss %.4f | %.1fs | %s",
        best["epoch"], best.get("weights", "model"), best["val_acc"], test_stats.acc, test_stats.loss,
        time.perf_counter() - started, run.path,
    )
    return best["val_acc"]


def _restore(
    checkpoint: dict, model, optimizer, scheduler, ema: WeightAverage | None, data_generator,
    epochs: int,
) -> None:
    """Puts a run back as its checkpoint left it: weights, EMA, optimizer, schedule, every RNG."""
    model.load_state_dict(checkpoint["model"])
    if ema is not None:
        ema.load_state_dict(checkpoint["ema"])
    if checkpoint["epochs"] == epochs:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
    else:  # a longer (or shorter) run: follow the new schedule from the step reached
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            for _ in range(checkpoint["step"]):
                scheduler.step()
        lrs = [group["lr"] for group in optimizer.param_groups]
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr
    set_rng_state(checkpoint["rng"])
    data_generator.set_state(checkpoint["data_generator"])


def _stopped_message(stop: StopRequest, epoch: int, run: RunFolder) -> str:
    done = run.summary.get("epochs_completed", 0)
    return (
        f"stopped by {stop.signal_name} in epoch {epoch}; {run.last_checkpoint_path.relative_to(run.path)} "
        f"holds epoch {done}, so resume with: python train.py resume={run.path}"
        if done else f"stopped by {stop.signal_name} before the first epoch ended; nothing to resume."
    )


def hparams(cfg: DictConfig) -> dict[str, str | float | int | bool]:
    """The model and dataset names and every command-line override, as TensorBoard hparams."""
    values: dict[str, str | float | int | bool] = {
        "model": cfg.model.name, "dataset": cfg.dataset.name,
    }
    for override in _overrides():
        key, _, text = override.lstrip("+~").partition("=")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        values[key] = value if isinstance(value, (str, float, int, bool)) else str(value)
    return values


def _overrides() -> list[str]:
    """The command-line overrides of this job, when Hydra started it."""
    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return []


def resumed_config(cfg: DictConfig) -> DictConfig:
    """The config of the run being resumed, with this command's overrides on top (checked)."""
    run_dir = Path(cfg.resume)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ConfigError("resume= resumes one run; leave out --multirun.")
    original = saved_overrides(run_dir)
    resumed = hydra.compose("config", overrides=merge_overrides(original, _overrides()))
    check_resumable(hydra.compose("config", overrides=original), resumed, run_dir)
    return resumed


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        if cfg.resume:
            cfg = resumed_config(cfg)
        if not distributed.is_main():
            logging.getLogger().setLevel(logging.WARNING)  # rank 0 speaks for the run
        return train(cfg, HydraConfig.get().runtime.output_dir)
    except (ConfigError, TrainingStopped) as err:
        raise UserError(str(err)) from None
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
