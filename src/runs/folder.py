"""The run folder: everything a later step (inference, resume, sweep summaries) needs.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so a
crash never leaves a half-written summary, checkpoint or weights file behind; the temporary file
of a process killed mid-write is removed when the folder is next opened to write. The loggers of
``cfg.logger`` (W&B, MLflow: src/tracking/) get a copy of what is written here, from here alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from src.contract import FIGURE_DPI, OR_NEW_RUN, RunPaths, Status
from src.fileio import atomic_write, read_csv, read_json, remove_stale_temporaries, write_json
from src.tracking import Tracker

log = logging.getLogger(__name__)


def state_dict_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous copies of the weights (what safetensors needs)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _save(state: dict[str, Any], path: Path) -> None:
    """torch.save into a file closed here, also when the write fails (a full disk), so that
    removing the unfinished file gives its space back at once."""
    with open(path, "wb") as f:
        torch.save(state, f)


def _close(fig: Figure) -> None:
    """Frees a figure's memory; pyplot is loaded by then (src/report/plots.py made the figure)."""
    from matplotlib import pyplot as plt

    plt.close(fig)


# metrics.csv's first columns; the timings and anything else follow.
LEADING_COLUMNS = (
    "epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "ema_val_loss",
    "ema_val_acc",
)  # fmt: skip


def read_metrics(run_dir: str | Path) -> pd.DataFrame | None:
    """A run's metrics.csv, None before the first epoch ends; DamagedFile when it is damaged."""
    path = RunPaths(run_dir).metrics
    return read_csv(path, OR_NEW_RUN, column="epoch", numeric=True) if path.is_file() else None


def _metrics_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    metrics = read_metrics(run_dir)
    return [] if metrics is None else metrics.to_dict("records")


def _render(fig: Figure) -> np.ndarray:
    """The figure drawn once at FIGURE_DPI: uint8 (height, width, 3)."""
    fig.set_dpi(FIGURE_DPI)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class _NoTensorBoard:
    """Stands in for the SummaryWriter in processes that do not write (torchrun ranks above 0)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class RunFolder:
    """Writes metrics.csv, summary.json, model.json, weights, checkpoints and TensorBoard logs.

    With ``writes=False`` (torchrun ranks above 0) it keeps the same records in memory and writes
    nothing, so the training code reads the same on every process.

    ``tracker`` (src/tracking/) gets a copy of the config, each metrics row, the summary's numbers
    at the end, the figures, the tables and the best weights; its ``tensorboard`` flag says
    whether tensorboard/ is written (``logger=none`` turns it off).
    """

    def __init__(
        self,
        path: str | Path,
        resume_epoch: int | None = None,
        writes: bool = True,
        tracker: Tracker | None = None,
    ):
        """``resume_epoch``: reopen a run whose checkpoint holds that epoch, dropping any later
        metrics rows and TensorBoard events (from an epoch that was cut short), so none repeat.
        Its summary.json and metrics.csv are read before anything is written: a damaged one
        raises DamagedFile with the folder as it was."""
        self.path = Path(path)
        self.paths = RunPaths(path)
        self.writes = writes
        self.tracker = tracker if tracker is not None and writes else Tracker()  # rank 0 alone logs
        self.metrics_path = self.paths.metrics
        self.summary_path = self.paths.summary
        self.best_weights_path = self.paths.best_weights
        self.last_checkpoint_path = self.paths.last_checkpoint
        self.summary: dict[str, Any] = {}
        self.metrics: list[dict[str, float]] = []
        purge_step = None
        if resume_epoch is not None:
            self.summary = (
                read_json(self.summary_path, OR_NEW_RUN) if self.summary_path.is_file() else {}
            )
            rows = _metrics_rows(self.path)
            self.metrics = [row for row in rows if row["epoch"] <= resume_epoch]
            purge_step = resume_epoch + 1
        if writes:
            for stale in remove_stale_temporaries(self.path):  # of a process killed mid-write
                log.info("removed %s, an unfinished file of a process that was killed", stale)
            folders = [self.best_weights_path.parent, self.last_checkpoint_path.parent]
            folders += [self.paths.plots] + (
                [self.paths.tensorboard] if self.tracker.tensorboard else []
            )
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
        self.tensorboard = (
            SummaryWriter(str(self.paths.tensorboard), purge_step=purge_step)
            if writes and self.tracker.tensorboard
            else _NoTensorBoard()
        )
        if self.tracker.backends:  # a resumed run reopens the runs that summary.json names
            self.tracker.start(self.path, self.summary.get("tracking", {}))
            self.summary["tracking"] = self.tracker.summary(self.summary.get("tracking"))

    @classmethod
    def reopen(cls, path: str | Path) -> RunFolder:
        """A finished run's folder, to add to it (its summary and metrics are kept)."""
        rows = _metrics_rows(path)
        return cls(path, resume_epoch=int(max((row["epoch"] for row in rows), default=0)))

    def update_summary(self, **fields: Any) -> None:
        self.summary.update(fields, updated_at=datetime.now().isoformat(timespec="seconds"))
        if self.tracker.backends:
            self.summary["tracking"] = self.tracker.summary(self.summary.get("tracking"))
        if self.writes:
            write_json(self.summary_path, self.summary)
        if fields.get("status") == Status.COMPLETED:  # the test metrics are in: copy the numbers
            self.tracker.log_summary(
                {
                    key: value
                    for key, value in self.summary.items()
                    if isinstance(value, (int, float)) and not isinstance(value, bool)
                }
            )
            if self.best_weights_path.is_file():
                self.tracker.log_model([self.best_weights_path, self.paths.model_card])

    def write_model_card(self, card: dict[str, Any]) -> None:
        """model.json: what inference needs to rebuild the model and preprocess an image."""
        if self.writes:
            write_json(self.paths.model_card, card)

    def frame(self) -> pd.DataFrame:
        """The metrics so far, one row per epoch, in the columns' usual order even when the
        first epochs were not validated (trainer.val_every) and so have no val_* values."""
        frame = pd.DataFrame(self.metrics)
        first = [column for column in LEADING_COLUMNS if column in frame]
        return frame[first + [column for column in frame if column not in first]]

    def log_epoch(self, row: dict[str, float]) -> None:
        """One row of metrics.csv (rewritten whole, atomically), and its scalars in TensorBoard."""
        self.metrics.append(row)
        if not self.writes:
            return
        frame = self.frame()
        atomic_write(self.metrics_path, lambda tmp: frame.to_csv(tmp, index=False))
        epoch = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch":
                split, _, name = key.partition("_")
                tag = (
                    f"{split}/{name}" if split in ("train", "val", "test", "ema") else f"misc/{key}"
                )
                self.tensorboard.add_scalar(tag, value, epoch)
        self.tensorboard.flush()
        self.tracker.log_metrics(row, step=epoch)  # the same names as metrics.csv's columns

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """TensorBoard's HPARAMS tab: this run's settings beside its results, to compare runs."""
        if self.writes:
            self.tensorboard.add_hparams(hparams, metrics, run_name=".")

    def write_table(self, name: str, table: pd.DataFrame) -> None:
        if self.writes:
            atomic_write(self.path / name, lambda tmp: table.to_csv(tmp, index=False))
            self.tracker.log_table(name, table, self.path / name)

    def save_best_weights(self, model: nn.Module, metadata: dict[str, str]) -> None:
        if self.writes:
            tensors = state_dict_for_saving(model)
            atomic_write(self.best_weights_path, lambda tmp: save_file(tensors, tmp, metadata))

    def save_figure(self, name: str, fig: Figure) -> None:
        """plots/<name>.png, and the same pixels in TensorBoard's IMAGES tab: the figure is drawn
        once for both (TensorBoard's add_figure would draw it again)."""
        if not self.writes:
            _close(fig)
            return
        pixels = _render(fig)
        _close(fig)
        png = self.paths.plots / f"{name}.png"
        atomic_write(png, lambda tmp: Image.fromarray(pixels).save(tmp, format="png"))
        self.tensorboard.add_image(name, pixels, dataformats="HWC")
        self.tracker.log_figure(name, png)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        if self.writes:
            atomic_write(self.last_checkpoint_path, lambda tmp: _save(state, tmp))

    def close(self) -> None:
        """Closes TensorBoard's writer and the loggers' runs; summary.json then records any logger
        that failed along the way."""
        self.tensorboard.close()
        if self.tracker.backends:  # only where this process writes (see __init__)
            self.tracker.finish(self.summary.get("status", Status.FAILED))
            tracking = self.tracker.summary(self.summary.get("tracking"))
            if tracking != self.summary.get("tracking"):
                self.summary["tracking"] = tracking
                write_json(self.summary_path, self.summary)
