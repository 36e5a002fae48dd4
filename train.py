"""Train a Vision Transformer from scratch.

    python train.py                                   # embedded digits, about a minute on a CPU
    python train.py model=vit_tiny trainer.epochs=10 optimizer.lr=5e-4
    python train.py --multirun model.depth=2,4 optimizer.lr=1e-3,5e-4

compose config -> seed -> build data, model, optimizer, scheduler -> fit (best epoch chosen on
validation) -> test the best weights -> write the run folder (see README, "The run folder").
"""

from __future__ import annotations

import logging
import platform
import time
from datetime import datetime
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from src.artifacts import RunFolder
from src.data import BatchAugment, Dataset, load_dataset, make_batches, worker_count
from src.engine import (
    configure_backend,
    evaluate,
    resolve_device,
    resolve_precision,
    rng_state,
    seed_everything,
    train_one_epoch,
)
from src.errors import ConfigError
from src.model import VisionTransformer, check_shape, count_parameters
from src.optim import build_optimizer
from src.plots import plot_curves

log = logging.getLogger("train")


class UserError(CompactHydraException):
    """Shown by Hydra as its message alone, without a traceback."""


def check_trainer(cfg: DictConfig) -> None:
    for key in ("epochs", "batch_size", "eval_batch_size"):
        value = cfg.trainer[key]
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"trainer.{key}={value} must be a whole number of at least 1.")


def model_kwargs(model_cfg: DictConfig, data: Dataset) -> dict:
    """VisionTransformer's arguments: the model config (less its name) plus what the data decides."""
    kwargs = OmegaConf.to_container(model_cfg, resolve=True)
    kwargs.pop("name", None)
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
    """Run one training job into ``run_dir``; returns the best validation accuracy."""
    run = RunFolder(run_dir)
    started = time.perf_counter()
    run.update_summary(
        status="running",
        started_at=datetime.now().isoformat(timespec="seconds"),
        dataset=cfg.dataset.name,
        model=cfg.model.name,
        overrides=_overrides(),
    )
    try:
        best_val_acc = _fit_and_test(cfg, run, started)
    except KeyboardInterrupt:
        run.update_summary(status="interrupted")
        raise
    except BaseException as err:
        run.update_summary(status="failed", error=str(err) or type(err).__name__)
        raise
    finally:
        run.close()
    return best_val_acc


def _fit_and_test(cfg: DictConfig, run: RunFolder, started: float) -> float:
    # Cheap checks first, so a bad setting fails before any data is read.
    check_trainer(cfg)
    check_shape(cfg.model.image_size, cfg.model.patch_size, cfg.model.embed_dim, cfg.model.num_heads)
    device = resolve_device(cfg.trainer.device)
    precision = resolve_precision(cfg.trainer.precision, device)
    configure_backend(device)
    seed_everything(cfg.seed)

    data = load_dataset(cfg.dataset)
    model = build_model(cfg.model, data).to(device)
    # torch.compile wraps the module; the unwrapped `model` is what gets saved.
    net = torch.compile(model) if cfg.trainer.compile else model

    loader_args = dict(
        image_size=cfg.model.image_size, mean=data.mean, std=data.std, device=device,
        num_workers=worker_count(cfg.trainer.num_workers),
    )
    train_batches = make_batches(
        data.train,
        cfg.trainer.batch_size,
        shuffle=True,
        augment=BatchAugment(**cfg.dataset.augment),
        seed=cfg.seed,
        **loader_args,
    )
    val_batches = make_batches(data.val, cfg.trainer.eval_batch_size, **loader_args)
    test_batches = make_batches(data.test, cfg.trainer.eval_batch_size, **loader_args)

    optimizer = build_optimizer(instantiate(cfg.optimizer), model, device)
    scheduler = instantiate(cfg.scheduler)(
        optimizer, steps_per_epoch=len(train_batches), epochs=cfg.trainer.epochs
    )

    num_params = count_parameters(model)
    run.write_model_card(model_card(cfg, model, data))
    run.update_summary(
        device=str(device),
        precision=str(precision or torch.float32).removeprefix("torch."),
        num_params=num_params,
        classes=data.class_names,
        split_sizes={"train": len(data.train), "val": len(data.val), "test": len(data.test)},
    )
    log.info(
        "%s: %d train / %d val / %d test images, %d classes | %s, %s parameters | %s, %s",
        data.name, len(data.train), len(data.val), len(data.test), len(data.class_names),
        cfg.model.name, f"{num_params:,}", device, run.summary["precision"],
    )

    best = {"val_acc": -1.0, "val_loss": float("inf"), "epoch": 0}
    step = 0
    show = cfg.trainer.progress
    with logging_redirect_tqdm(), tqdm(
        range(1, cfg.trainer.epochs + 1), desc="epochs", unit="epoch", disable=not show
    ) as epochs:
        for epoch in epochs:
            epoch_start = time.perf_counter()
            with tqdm(
                total=len(train_batches), desc=f"epoch {epoch}", leave=False, disable=not show
            ) as steps:
                train_stats = train_one_epoch(
                    net, train_batches, optimizer, scheduler, device, precision,
                    cfg.trainer.grad_clip, cfg.trainer.label_smoothing, progress=steps,
                )
            train_seconds = time.perf_counter() - epoch_start
            val_stats = evaluate(net, val_batches, device, precision)
            step += len(train_batches)

            row = {
                "epoch": epoch,
                "step": step,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": train_stats.loss,
                "train_acc": train_stats.acc,
                "val_loss": val_stats.loss,
                "val_acc": val_stats.acc,
                "epoch_seconds": time.perf_counter() - epoch_start,
                "images_per_second": train_stats.images / train_seconds,
            }
            run.log_epoch(row)

            # Best on validation accuracy, ties broken by the lower validation loss.
            if (val_stats.acc, -val_stats.loss) > (best["val_acc"], -best["val_loss"]):
                best = {"val_acc": val_stats.acc, "val_loss": val_stats.loss, "epoch": epoch}
                run.save_best_weights(
                    model, {"epoch": str(epoch), "val_acc": f"{val_stats.acc:.6f}"}
                )
            run.save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "step": step,
                    "best": best,
                    "rng": rng_state(),
                    "data_generator": train_batches.generator.get_state(),
                }
            )
            run.update_summary(
                epochs_completed=epoch,
                best_val_acc=best["val_acc"],
                best_epoch=best["epoch"],
                train_seconds=time.perf_counter() - started,
            )
            epochs.set_postfix(
                loss=f"{train_stats.loss:.3f}", val_acc=f"{val_stats.acc:.3f}",
                best=f"{best['val_acc']:.3f}",
            )
            log.info(
                "epoch %d/%d  lr %.2e  train loss %.4f acc %.4f  val loss %.4f acc %.4f  (%.1fs)",
                epoch, cfg.trainer.epochs, row["lr"], train_stats.loss, train_stats.acc,
                val_stats.loss, val_stats.acc, row["epoch_seconds"],
            )

    run.save_figure("curves", plot_curves(run.frame(), title=f"{cfg.model.name} on {data.name}"))

    # Test the weights chosen on validation, read back from the file inference will use.
    model.load_state_dict(load_file(run.best_weights_path, device=str(device)))
    test_stats = evaluate(net, test_batches, device, precision)
    run.tensorboard.add_scalar("test/acc", test_stats.acc, best["epoch"])
    run.tensorboard.add_scalar("test/loss", test_stats.loss, best["epoch"])
    run.update_summary(
        status="completed",
        test_acc=test_stats.acc,
        test_loss=test_stats.loss,
        finished_at=datetime.now().isoformat(timespec="seconds"),
        train_seconds=time.perf_counter() - started,
        python=platform.python_version(),
        torch=torch.__version__,
    )
    log.info(
        "best epoch %d: val acc %.4f | test acc %.4f, loss %.4f | %.1fs | %s",
        best["epoch"], best["val_acc"], test_stats.acc, test_stats.loss,
        time.perf_counter() - started, run.path,
    )
    return best["val_acc"]


def _overrides() -> list[str]:
    """The command-line overrides of this job, when Hydra started it."""
    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return []


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        return train(cfg, HydraConfig.get().runtime.output_dir)
    except ConfigError as err:
        raise UserError(str(err)) from None


if __name__ == "__main__":
    main()
