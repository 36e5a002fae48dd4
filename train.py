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

import contextlib
import logging
import platform
import sys
import time
import warnings
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.utils import instantiate
from omegaconf import DictConfig
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from src import distributed, job, runlock, tracking, trials
from src.artifacts import RunFolder
from src.checks import check_config
from src.checkpoint import TrainingState
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
from src.ema import WeightAverage
from src.engine import (
    Diverged,
    configure_backend,
    evaluate,
    exact_fp32,
    optimizer_steps,
    resolve_device,
    resolve_precision,
    seed_everything,
    train_one_epoch,
)
from src.errors import ConfigError
from src.fileio import out_of_space, write_json
from src.model import VisionTransformer, count_parameters
from src.model_card import build_model, model_card
from src.optim import build_optimizer, finetune_lr_scale
from src.plots import plot_curves
from src.pretrained import freeze_backbone, load_pretrained
from src.report import write_report
from src.resume import load_checkpoint, trained_all_epochs
from src.stopping import StopRequest, TrainingStopped, disk_full_message, stopped_message

log = logging.getLogger("train")

# configs/hydra/launcher/submitit_*.yaml give the submitit plugin's launchers this project's
# defaults under the plugin's own names, which Hydra validates against the plugin's schemas (as
# wanted) with a deprecation warning each time; that warning alone is left out.
warnings.filterwarnings(
    "ignore", message=r"\s*'hydra/launcher/submitit_\w+' is validated against ConfigStore schema"
)


class UserError(CompactHydraException):
    """Shown by Hydra as its message alone, without a traceback."""


def train(cfg: DictConfig, run_dir: str | Path) -> float:
    """Run one training job into ``run_dir`` (or resume it there); returns the best validation
    accuracy. The folder is locked meanwhile: one process per run folder (src/runlock.py)."""
    with runlock.holding(run_dir):
        return _train(cfg, Path(run_dir))


def _train(cfg: DictConfig, run_dir: Path) -> float:
    try:  # Settings first: a bad one stops the run before any data is read.
        check_config(cfg)
        trial = trials.from_hydra()  # an Optuna trial of a stored study: reports every epoch
        tracker = tracking.from_config(cfg, run_dir)  # cfg.logger; a missing package stops here
        checkpoint = load_checkpoint(run_dir) if cfg.resume else None
        if checkpoint is not None and trained_all_epochs(run_dir, checkpoint, cfg.trainer.epochs):
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
            overrides=job.overrides(),
        )
    else:
        resumes = run.summary.get("resumes", [])
        resumes.append({"at": now, "from_epoch": checkpoint["epoch"], "overrides": job.overrides()})
        run.summary.pop("error", None)  # of the stop before, if that was a failure
        run.update_summary(status="running", resumes=resumes)
    if distributed.restart_count():  # torchrun started the workers again after one died
        restarts = run.summary.get("restarts", [])
        restarts.append({"at": now, "restart": distributed.restart_count(),
                         "from_epoch": checkpoint["epoch"] if checkpoint else 0})
        run.update_summary(restarts=restarts)
    try:
        with StopRequest() as stop:
            training = build(cfg, run, checkpoint)
            describe(cfg, run, training, resuming=checkpoint is not None)
            fit(cfg, run, training, stop, trial)
            test_and_report(cfg, run, training)
            return training.state.best["val_acc"]
    except (TrainingStopped, KeyboardInterrupt):
        run.update_summary(status="interrupted")
        raise
    except BaseException as err:  # failed (a full disk: one sentence), or pruned by a study
        if out_of_space(err):  # every file written before is whole (atomic writes)
            message = disk_full_message(run)
            with contextlib.suppress(Exception):  # the full disk may refuse this too
                run.update_summary(status="failed", error=message)
            raise ConfigError(message) from None
        run.update_summary(status="pruned" if trials.pruned(err) else "failed",
                           error=str(err) or type(err).__name__)
        raise
    finally:
        try:
            run.close()
        except Exception as err:
            if not out_of_space(err):
                raise
            log.warning("the disk holding %s is full: the last TensorBoard events or logger "
                        "updates could not be written", run.path)


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
    seed_everything(cfg.seed + distributed.rank())  # each process its own dropout (DDP syncs weights)

    with distributed.main_first():  # rank 0 downloads, decodes and caches; the others read that
        data = load_dataset(cfg.dataset)
    model = build_model(cfg.model, data)
    if cfg.model.pretrained and checkpoint is None:  # a resumed run has its weights in last.pt
        run.update_summary(pretrained=load_pretrained(model, cfg.model.pretrained).summary())
    pretrained = run.summary.get("pretrained", {}) if cfg.model.pretrained else {}
    if "mean" in pretrained:  # images normalised as the weights were trained (model.json too)
        data = replace(data, mean=pretrained["mean"], std=pretrained["std"])
    if cfg.finetune.freeze_backbone:
        freeze_backbone(model)
    model = model.to(device)
    # DDP and torch.compile wrap the module; the unwrapped `model` is what gets saved.
    net = model
    if distributed.active():  # gradients averaged across the processes at every step
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    net = torch.compile(net, mode=cfg.trainer.compile_mode) if cfg.trainer.compile else net
    ema = WeightAverage(model, cfg.trainer.ema_decay) if cfg.trainer.ema else None

    loader_args = dict(
        image_size=cfg.model.image_size, mean=data.mean, std=data.std, device=device,
        num_workers=worker_count(cfg.trainer.num_workers),
        bad_images=cfg.dataset.get("bad_images", "skip"),
    )
    aug = cfg.augment
    train_batches = make_batches(
        data.train,
        cfg.trainer.batch_size,
        shuffle=True,
        augment=BatchAugment(
            crop_pixels(aug.crop_padding, cfg.dataset.augment.crop_fraction, cfg.model.image_size),
            aug.horizontal_flip, aug.randaugment_ops,
            aug.randaugment_magnitude, aug.random_erasing,
        ),
        mix=MixBatch(len(data.class_names), aug.mixup_alpha, aug.cutmix_alpha, aug.mix_prob),
        repeats=aug.repeats,
        seed=cfg.seed,
        **loader_args,
    )
    lr_scale = finetune_lr_scale(cfg.model.depth, cfg.finetune.backbone_lr_scale, cfg.finetune.layer_decay)
    optimizer = build_optimizer(instantiate(cfg.optimizer), model, device, lr_scale)
    scheduler = instantiate(cfg.scheduler)(
        optimizer, steps_per_epoch=optimizer_steps(len(train_batches), cfg.trainer.accumulate_steps),
        epochs=cfg.trainer.epochs,
    )
    state = TrainingState(model, optimizer, scheduler, ema, train_batches, cfg.trainer.epochs)
    if checkpoint is not None:
        state.load_state_dict(checkpoint)
    return Training(
        device, precision, data, net, state,
        val_batches=make_batches(data.val, cfg.trainer.eval_batch_size, **loader_args),
        test_batches=make_batches(data.test, cfg.trainer.eval_batch_size, **loader_args),
        started=started,
        seconds_before=run.summary.get("train_seconds", 0.0) if checkpoint else 0.0,
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
        data.name, len(data.train), len(data.val), len(data.test), len(data.class_names),
        cfg.model.name, f"{num_params:,}", t.device, run.summary["precision"],
        f" | resuming after epoch {t.state.epoch}" if resuming else "",
    )
    note = resize_note(cfg.dataset, cfg.model, data.image_size)
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
            "those %d, one step an epoch", cfg.trainer.batch_size, share,
            "each process has" if distributed.active() else "there are", share,
        )
    batches = min(cfg.trainer.accumulate_steps, training_steps(share, per_process))
    return per_process * batches * distributed.world_size()


def fit(cfg: DictConfig, run: RunFolder, t: Training, stop: StopRequest,
        trial: trials.TrialReport | None = None) -> None:
    """Trains epoch after epoch: validates, logs, keeps the best weights and a checkpoint."""
    state, ema = t.state, t.state.ema
    show = cfg.trainer.progress and distributed.is_main()
    with logging_redirect_tqdm(), tqdm(
        range(state.epoch + 1, cfg.trainer.epochs + 1), desc="epochs", unit="epoch", disable=not show
    ) as epochs:
        for epoch in epochs:
            epoch_start = time.perf_counter()
            with tqdm(
                total=len(state.train_batches), desc=f"epoch {epoch}", leave=False, disable=not show
            ) as steps:
                try:
                    train_stats = train_one_epoch(
                        t.net, state.train_batches, state.optimizer, state.scheduler, t.device,
                        t.precision, cfg.trainer.grad_clip, cfg.trainer.label_smoothing,
                        cfg.trainer.accumulate_steps, ema, progress=steps,
                        stop_requested=lambda: bool(stop),
                    )
                except Diverged as err:
                    raise ConfigError(
                        f"training diverged in epoch {epoch}: {err}; the usual cause is a learning "
                        f"rate too high for this model (optimizer.lr={cfg.optimizer.lr}), so lower "
                        "it, lengthen scheduler.warmup_epochs or keep trainer.grad_clip above 0; "
                        f"the best weights so far (epoch {state.best['epoch']}) are kept in "
                        "weights/best.safetensors."
                    ) from None
            if not train_stats.complete:  # the cut-short epoch is dropped; last.pt has the one before
                raise TrainingStopped(stopped_message(stop, epoch, run), stop)
            train_seconds = time.perf_counter() - epoch_start
            val_stats = evaluate(t.net, t.val_batches, t.device, t.precision)
            ema_stats = evaluate(ema.module, t.val_batches, t.device, t.precision) if ema else None
            state.epoch = epoch
            state.step += optimizer_steps(len(state.train_batches), cfg.trainer.accumulate_steps)

            row = {
                "epoch": epoch,
                "step": state.step,
                "lr": state.optimizer.param_groups[0]["lr"],
                "train_loss": train_stats.loss,
                "train_acc": train_stats.acc,
                "val_loss": val_stats.loss,
                "val_acc": val_stats.acc,
                **({"ema_val_loss": ema_stats.loss, "ema_val_acc": ema_stats.acc} if ema else {}),
                "epoch_seconds": time.perf_counter() - epoch_start,
                "images_per_second": train_stats.images / train_seconds,
            }
            run.log_epoch(row)
            _keep_best(run, state, [("model", state.model, val_stats)]
                       + ([("ema", ema.module, ema_stats)] if ema else []))
            run.save_checkpoint(state.state_dict())
            run.update_summary(
                epochs_completed=epoch,
                best_val_acc=state.best["val_acc"],
                best_epoch=state.best["epoch"],
                best_weights=state.best["weights"],  # "ema" when the average won
                train_seconds=t.seconds(),
            )
            epochs.set_postfix(
                loss=f"{train_stats.loss:.3f}", val_acc=f"{val_stats.acc:.3f}",
                best=f"{state.best['val_acc']:.3f}",
            )
            log.info(
                "epoch %d/%d  lr %.2e  train loss %.4f acc %.4f  val loss %.4f acc %.4f%s  (%.1fs)",
                epoch, cfg.trainer.epochs, row["lr"], train_stats.loss, train_stats.acc,
                val_stats.loss, val_stats.acc,
                f"  EMA val loss {ema_stats.loss:.4f} acc {ema_stats.acc:.4f}" if ema else "",
                row["epoch_seconds"],
            )
            if trial is not None:  # the study may prune a hopeless trial here
                trial.report(epoch, state.best["val_acc"])
            # Asked to stop while validating or saving: every process stops here, or none does.
            (stopping,) = distributed.any_rank(bool(stop))
            if stopping and epoch < cfg.trainer.epochs:
                raise TrainingStopped(stopped_message(stop, epoch + 1, run), stop)


def _keep_best(run: RunFolder, state: TrainingState, candidates: list) -> None:
    """Best on validation accuracy, ties broken by the lower validation loss; the EMA's weights
    are candidates too. The winner is saved as weights/best.safetensors."""
    for source, weights, stats in candidates:
        if (stats.acc, -stats.loss) > (state.best["val_acc"], -state.best["val_loss"]):
            state.best = {"val_acc": stats.acc, "val_loss": stats.loss, "epoch": state.epoch,
                          "weights": source}
            run.save_best_weights(
                weights, {"epoch": str(state.epoch), "val_acc": f"{stats.acc:.6f}", "weights": source}
            )


def test_and_report(cfg: DictConfig, run: RunFolder, t: Training) -> None:
    """Tests the weights chosen on validation, once, on the whole test split, and writes the
    report (per-class metrics, figures) from that same pass."""
    best = t.state.best
    run.save_figure("curves", plot_curves(run.frame(), title=f"{cfg.model.name} on {t.data.name}"))
    # The weights inference will use, read back from their file.
    if distributed.is_main():
        t.model.load_state_dict(load_file(run.best_weights_path, device=str(t.device)))
    distributed.broadcast_weights(t.model)
    # In plain fp32 and eager, whatever trainer.precision and trainer.compile: the numbers that
    # inference.py (--report) reproduces from the run folder.
    with exact_fp32():
        test_stats = evaluate(t.model, t.test_batches, t.device, None, keep_predictions=True)
    run.tensorboard.add_scalar("test/acc", test_stats.acc, best["epoch"])
    run.tensorboard.add_scalar("test/loss", test_stats.loss, best["epoch"])
    per_class = write_report(
        run, t.model, t.data, test_stats.predictions, t.device, cfg.trainer.visualize
    ) if distributed.is_main() else {}
    run.update_summary(
        status="completed",
        test_acc=test_stats.acc,
        test_loss=test_stats.loss,
        **per_class,
        finished_at=datetime.now().isoformat(timespec="seconds"),
        train_seconds=t.seconds(),
        python=platform.python_version(),
        torch=torch.__version__,
    )
    run.log_hparams(
        job.hparams(cfg), {"hparam/best_val_acc": best["val_acc"], "hparam/test_acc": test_stats.acc}
    )
    log.info(
        "best epoch %d (%s weights): val acc %.4f | test acc %.4f, loss %.4f | %.1fs | %s",
        best["epoch"], best["weights"], best["val_acc"], test_stats.acc, test_stats.loss,
        run.summary["train_seconds"], run.path,
    )


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float:
    if not distributed.is_main():
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 speaks for the run
    try:
        if cfg.resume:
            cfg = job.resumed_config(cfg)
        elif job.started_again():  # requeued by a cluster or restarted by torchrun: continue the run
            cfg.resume = HydraConfig.get().runtime.output_dir
        result = train(cfg, HydraConfig.get().runtime.output_dir)
    except (ConfigError, TrainingStopped) as err:
        if isinstance(err, TrainingStopped) and err.stop is not None:
            err.stop.hand_on()  # submitit's signal: now that the run says interrupted, requeue it
        raise UserError(str(err)) from None
    finally:  # leaves the process group; waits for the other ranks only when the run went well,
        distributed.shutdown(together=sys.exc_info()[0] is None)  # as a rank may have died
    return result


if __name__ == "__main__":
    job.share_import_path()  # for submitit's jobs when train.py is run from another folder
    main()
