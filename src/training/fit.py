"""Fitting and testing: epoch after epoch until the run's length, then one test of the weights
chosen on validation, and the report written from that same pass."""

from __future__ import annotations

import logging
import platform
import time
from datetime import datetime

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from src import distributed
from src.contract import Status
from src.errors import Diverged
from src.model.views import with_test_views
from src.report.plots import plot_curves
from src.report.writer import write_report
from src.runs.folder import RunFolder
from src.training import job, trials
from src.training.checkpoint import TrainingState
from src.training.device import exact_fp32
from src.training.loops import (
    EpochStats,
    NonFiniteLoss,
    evaluate,
    labelled,
    optimizer_steps,
    train_one_epoch,
)
from src.training.resize import ResizedBatches, epoch_image_size
from src.training.setup import Training
from src.training.stopping import StopRequest, TrainingStopped, stopped_message

log = logging.getLogger("train")

# An epoch's parts as torch.profiler names them (benchmarks/where_time_goes.py).
TRAINING, VALIDATION = "training", "validation"
CHECKPOINT, LOGS = "checkpoint and best weights", "metrics.csv, summary and logs"


def fit(
    cfg: DictConfig,
    run: RunFolder,
    t: Training,
    stop: StopRequest,
    trial: trials.TrialReport | None = None,
) -> None:
    """Trains epoch after epoch: validates (every trainer.val_every epochs and after the last),
    logs, keeps the best weights and a checkpoint."""
    state = t.state
    show = cfg.trainer.progress and distributed.is_main()
    # Bars on a terminal only (tqdm's None): a log redirected to a file gets the epoch's log line,
    # not a carriage return per update.
    with (
        logging_redirect_tqdm(),
        tqdm(
            range(state.epoch + 1, cfg.trainer.epochs + 1),
            desc="epochs",
            unit="epoch",
            disable=None if show else True,
        ) as epochs,
    ):
        for epoch in epochs:
            epoch_start = time.perf_counter()
            with labelled(TRAINING):
                train_stats = _train_epoch(cfg, t, epoch, stop, show)
            if not train_stats.complete:  # dropped: last.pt holds the epoch before
                raise TrainingStopped(stopped_message(stop, epoch, run), stop)
            train_seconds = time.perf_counter() - epoch_start
            with labelled(VALIDATION):
                validating = validation_due(cfg, epoch, stop)
                row, candidates = _validate(cfg, t, epoch, train_stats, validating)
            row["epoch_seconds"] = time.perf_counter() - epoch_start
            row["images_per_second"] = train_stats.images / train_seconds
            row["run_seconds"] = t.seconds()  # data preparation included, and earlier sessions
            with labelled(LOGS):
                run.log_epoch(row)
            with labelled(CHECKPOINT):
                _keep_best(run, state, candidates)
                run.save_checkpoint(state.state_dict())
            with labelled(LOGS):
                run.update_summary(
                    epochs_completed=epoch, train_seconds=t.seconds(), **_best(state)
                )
                epochs.set_postfix(_postfix(row, state))
                _log_epoch(cfg, row)
            if trial is not None and validating:  # the study may prune a hopeless trial here
                trial.report(epoch, state.best["val_acc"])
            # Asked to stop while validating or saving: every process stops here, or none does.
            (stopping,) = distributed.any_rank(bool(stop))
            if stopping and epoch < cfg.trainer.epochs:
                raise TrainingStopped(stopped_message(stop, epoch + 1, run), stop)


def validation_due(cfg: DictConfig, epoch: int, stop: StopRequest) -> bool:
    """Every trainer.val_every epochs and after the last; and before a requested stop, so that a
    stopped run has best weights. Every process gets the same answer (validating is collective)."""
    if epoch % cfg.trainer.val_every == 0 or epoch == cfg.trainer.epochs:
        return True
    (stopping,) = distributed.any_rank(bool(stop))
    return stopping


def _best(state: TrainingState) -> dict:
    """summary.json's best_* keys, once an epoch has been validated."""
    best = state.best
    if not best["epoch"]:
        return {}
    return {
        "best_val_acc": best["val_acc"],
        "best_epoch": best["epoch"],
        "best_weights": best["weights"],  # "ema" when the average won
    }


def _postfix(row: dict[str, float], state: TrainingState) -> dict[str, str]:
    """The epochs bar's numbers: the loss, and validation's once there is one."""
    postfix = {"loss": f"{row['train_loss']:.3f}"}
    if "val_acc" in row:
        postfix["val_acc"] = f"{row['val_acc']:.3f}"
    if state.best["epoch"]:
        postfix["best"] = f"{state.best['val_acc']:.3f}"
    return postfix


def _train_epoch(
    cfg: DictConfig, t: Training, epoch: int, stop: StopRequest, show: bool
) -> EpochStats:
    """One pass over the training batches (at the epoch's size under progressive resizing), with
    its progress bar; a loss that stops being a number is said in one sentence, with what to
    change."""
    state = t.state
    batches, size, desc = state.train_batches, epoch_image_size(cfg, epoch), f"epoch {epoch}"
    if size != cfg.model.image_size:
        batches, desc = ResizedBatches(batches, size), f"{desc} at {size} px"
    with tqdm(
        total=len(batches),
        desc=desc,
        leave=False,
        disable=None if show else True,  # None: on a terminal only
    ) as steps:
        try:
            return train_one_epoch(
                t.net,
                batches,
                state.optimizer,
                state.scheduler,
                t.device,
                t.precision,
                cfg.trainer.grad_clip,
                cfg.trainer.label_smoothing,
                cfg.trainer.accumulate_steps,
                state.ema,
                progress=steps,
                stop_requested=lambda: bool(stop),
            )
        except NonFiniteLoss as err:
            raise Diverged(
                f"training diverged in epoch {epoch}: {err}; the usual cause is a learning "
                f"rate too high for this model (optimizer.lr={cfg.optimizer.lr}), so lower "
                "it, lengthen scheduler.warmup_epochs or keep trainer.grad_clip above 0; "
                f"the best weights so far (epoch {state.best['epoch']}) are kept in "
                "weights/best.safetensors."
            ) from None


def _validate(
    cfg: DictConfig, t: Training, epoch: int, train_stats: EpochStats, validating: bool
) -> tuple[dict[str, float], list]:
    """Validates the model (and its EMA) when ``validating``, and moves the run on by an epoch;
    returns the epoch's metrics row so far (without val_* when not validating), and the weights
    that may be the best yet, with their scores."""
    state, ema = t.state, t.state.ema
    state.epoch = epoch
    state.step += optimizer_steps(len(state.train_batches), cfg.trainer.accumulate_steps)
    row = {
        "epoch": epoch,
        "step": state.step,
        "lr": state.optimizer.param_groups[0]["lr"],
        "train_loss": train_stats.loss,
        "train_acc": train_stats.acc,
    }
    if cfg.trainer.start_image_size is not None:  # progressive resizing: the epoch's input size
        row["train_image_size"] = epoch_image_size(cfg, epoch)
    if not validating:
        return row, []
    val_stats = evaluate(t.net, t.val_batches, t.device, t.precision)
    row.update(val_loss=val_stats.loss, val_acc=val_stats.acc)
    candidates = [("model", state.model, val_stats)]
    if ema:
        ema_stats = evaluate(ema.module, t.val_batches, t.device, t.precision)
        row.update(ema_val_loss=ema_stats.loss, ema_val_acc=ema_stats.acc)
        candidates.append(("ema", ema.module, ema_stats))
    return row, candidates


def _log_epoch(cfg: DictConfig, row: dict[str, float]) -> None:
    val = (
        f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}"
        if "val_acc" in row
        else f"not validated (trainer.val_every={cfg.trainer.val_every})"
    )
    if "ema_val_acc" in row:
        val += f"  EMA val loss {row['ema_val_loss']:.4f} acc {row['ema_val_acc']:.4f}"
    size = f" at {row['train_image_size']} px" if "train_image_size" in row else ""
    log.info(
        "epoch %d/%d  lr %.2e  train loss %.4f acc %.4f%s  %s  (%.1fs)",
        row["epoch"],
        cfg.trainer.epochs,
        row["lr"],
        row["train_loss"],
        row["train_acc"],
        size,
        val,
        row["epoch_seconds"],
    )


def _keep_best(run: RunFolder, state: TrainingState, candidates: list) -> None:
    """Best on validation accuracy, ties broken by the lower validation loss; the EMA's weights
    are candidates too. The winner is saved as weights/best.safetensors."""
    for source, weights, stats in candidates:
        if (stats.acc, -stats.loss) > (state.best["val_acc"], -state.best["val_loss"]):
            state.best = {
                "val_acc": stats.acc,
                "val_loss": stats.loss,
                "epoch": state.epoch,
                "weights": source,
            }
            run.save_best_weights(
                weights,
                {"epoch": str(state.epoch), "val_acc": f"{stats.acc:.6f}", "weights": source},
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
    # In plain fp32 and eager, whatever trainer.precision and trainer.compile, and averaged over
    # the same views: the numbers that inference.py (--report) reproduces from the run folder.
    shift = cfg.trainer.test_time_shift
    tested = with_test_views(t.model, shift, t.data.mean, t.data.std)
    with exact_fp32():
        test_stats = evaluate(tested, t.test_batches, t.device, None, keep_predictions=True)
    run.tensorboard.add_scalar("test/acc", test_stats.acc, best["epoch"])
    run.tensorboard.add_scalar("test/loss", test_stats.loss, best["epoch"])
    per_class = (
        write_report(run, t.model, t.data, test_stats.predictions, t.device, cfg.trainer.visualize)
        if distributed.is_main()
        else {}
    )
    run.update_summary(
        status=Status.COMPLETED,
        test_acc=test_stats.acc,
        test_loss=test_stats.loss,
        **per_class,
        finished_at=datetime.now().isoformat(timespec="seconds"),
        train_seconds=t.seconds(),
        python=platform.python_version(),
        torch=torch.__version__,
    )
    run.log_hparams(
        job.hparams(cfg),
        {"hparam/best_val_acc": best["val_acc"], "hparam/test_acc": test_stats.acc},
    )
    log.info(
        "best epoch %d (%s weights): val acc %.4f | test acc %.4f%s, loss %.4f | %.1fs | %s",
        best["epoch"],
        best["weights"],
        best["val_acc"],
        test_stats.acc,
        f" ({(2 * shift + 1) ** 2} views)" if shift else "",
        test_stats.loss,
        run.summary["train_seconds"],
        run.path,
    )
