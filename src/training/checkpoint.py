"""What checkpoints/last.pt holds, written and read by one object so save and restore can't drift.

A checkpoint is everything a resumed run needs to go on as if it had never stopped: the weights,
the EMA, the optimizer and schedule, where the run is (epoch, step, best so far), and every random
generator, of every process under torchrun (each process draws its own augmentation and dropout).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from src import distributed
from src.data.loaders import BatchLoader, StreamLoader
from src.training.device import rng_state, set_rng_state
from src.training.ema import WeightAverage

log = logging.getLogger(__name__)


def no_best_yet() -> dict[str, Any]:
    return {"val_acc": -1.0, "val_loss": float("inf"), "epoch": 0, "weights": "model"}


@dataclass
class TrainingState:
    """The training's moving parts and where it has got to; ``state_dict`` is the checkpoint."""

    model: nn.Module  # unwrapped: no DDP, no torch.compile
    optimizer: Optimizer
    scheduler: LRScheduler
    ema: WeightAverage | None
    train_batches: BatchLoader | StreamLoader
    epochs: int  # the run's length, as configured now
    epoch: int = 0  # the last epoch completed
    step: int = 0  # optimizer steps taken
    best: dict[str, Any] = field(default_factory=no_best_yet)

    def state_dict(self) -> dict[str, Any]:
        """Called on every process (the random states are gathered from all); rank 0 saves it."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "epochs": self.epochs,
            "step": self.step,
            "best": self.best,
            **({"ema": self.ema.state_dict()} if self.ema else {}),
            "rng": distributed.gather_objects(rng_state()),  # one per process, in rank order
            "data": distributed.gather_objects(self.train_batches.state_dict()),
        }

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Puts the run back as the checkpoint left it. A run resumed with another
        ``trainer.epochs`` follows the new schedule from the step it had reached."""
        self.model.load_state_dict(checkpoint["model"])
        if self.ema is not None:
            self.ema.load_state_dict(checkpoint["ema"])
        implementation = [_implementation(group) for group in self.optimizer.param_groups]
        if checkpoint["epochs"] == self.epochs:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        else:
            self._follow_new_schedule(checkpoint)
        # How the steps are computed suits this device, not the one the run started on (a run
        # begun on a CPU and resumed on a GPU gets the fused CUDA kernels).
        for group, chosen in zip(self.optimizer.param_groups, implementation):
            group.update(chosen)
        self.epoch, self.step, self.best = (
            checkpoint["epoch"],
            checkpoint["step"],
            checkpoint["best"],
        )
        rng, data = _this_process(checkpoint)
        if rng is not None:
            set_rng_state(rng)
            self.train_batches.load_state_dict(data)

    def _follow_new_schedule(self, checkpoint: dict[str, Any]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            for _ in range(checkpoint["step"]):
                self.scheduler.step()
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr


def _implementation(group: dict[str, Any]) -> dict[str, Any]:
    return {key: group[key] for key in ("fused", "foreach", "capturable") if key in group}


def _this_process(checkpoint: dict[str, Any]) -> tuple[dict | None, dict | None]:
    """This rank's random states; None (keep the fresh seed + rank) when the checkpoint came
    from a run with fewer processes."""
    rng, data = checkpoint["rng"], checkpoint.get("data")
    rank = distributed.rank()
    if isinstance(rng, dict) or rank >= len(rng):  # a dict: a checkpoint from an older version
        log.warning(
            "the checkpoint holds no random states for process %d: it draws fresh ones, so "
            "this resume is not exact",
            rank,
        )
        return None, None
    return rng[rank], data[rank]
