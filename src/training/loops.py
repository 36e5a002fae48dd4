"""The training and evaluation loops.

The CPU never waits for the GPU inside a training step. Metrics are accumulated on the device and
read once per epoch; whether the loss is still finite is copied to the CPU without waiting and
read a check later; stop requests are agreed between processes over a CPU channel, every
``CHECK_EVERY`` steps.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.profiler import record_function
from tqdm import tqdm

from src.distributed import active, all_reduce_sum, any_rank, gather_shards
from src.report.metrics import Predictions
from src.training.device import autocast
from src.training.ema import WeightAverage


@dataclass
class EpochStats:
    loss: float
    acc: float
    images: int
    complete: bool = True  # False when a stop request ended the epoch early
    predictions: Predictions | None = None  # from evaluate(..., keep_predictions=True)


class NonFiniteLoss(RuntimeError):
    """The training loss stopped being a finite number."""


# The parts of a training step as torch.profiler names them (benchmarks/where_time_goes.py).
BATCHES = "batches and augmentation"
FORWARD, BACKWARD, OPTIMIZER_STEP = "forward and loss", "backward", "optimizer step"

# Steps between checks for a stop request and for a NaN/inf loss. A check costs no wait for the
# GPU, but under torchrun it is a round trip between the processes.
CHECK_EVERY = 25


class StepChecks:
    """Every ``every`` steps: has a stop been asked for, and has the loss stayed finite? Every
    process gets the same answers at the same step, so none is left waiting in a collective.

    The finite check reads a flag copied to the CPU at the previous check (without waiting then),
    so a NaN is caught within two checks; by then the GPU has long finished that step, so
    reading it waits for nothing the CPU had not already queued behind it.
    """

    def __init__(
        self, device: torch.device, stop_requested: Callable[[], bool], every: int | None = None
    ):
        self.device = device
        self.stop_requested = stop_requested
        self.every = every or CHECK_EVERY
        pinned = device.type == "cuda"
        self._finite = torch.ones((), dtype=torch.bool, pin_memory=pinned)  # as of the last check
        self._copied = torch.cuda.Event() if pinned else None

    def due(self, step: int) -> bool:
        """Every ``every`` steps; and at every step for a stop request in a single process,
        where asking costs nothing."""
        return step % self.every == 0 or (not active() and bool(self.stop_requested()))

    def check(self, loss_sum: torch.Tensor) -> tuple[bool, bool]:
        """(stop, diverged), agreed by every process; then starts the next finite-flag copy."""
        if self._copied is not None:
            self._copied.synchronize()  # the copy queued a check ago (long done)
        diverged = not bool(self._finite)
        stop, diverged = any_rank(bool(self.stop_requested()), diverged)
        self._finite.copy_(torch.isfinite(loss_sum), non_blocking=True)
        if self._copied is not None:
            self._copied.record()
        return stop, diverged


class _RunningStats:
    """Sums of loss and correct predictions, kept on the device until asked for."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.count = 0

    def update(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """``targets``: class indices, or (B, classes) probabilities (Mixup/CutMix), whose
        largest share counts as the label."""
        labels = targets.argmax(dim=1) if targets.ndim == 2 else targets
        n = labels.shape[0]
        self.loss_sum += loss.detach().double() * n
        self.correct += (logits.argmax(dim=1) == labels).sum()
        self.count += n

    def result(self, complete: bool = True) -> EpochStats:
        """The epoch's mean loss and accuracy; under torchrun, over every process's images."""
        count = torch.full((), self.count, dtype=torch.float64, device=self.loss_sum.device)
        totals = torch.stack([self.loss_sum, self.correct.double(), count])
        loss_sum, correct, count = all_reduce_sum(totals).tolist()
        return EpochStats(loss_sum / max(count, 1), correct / max(count, 1), int(count), complete)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: Optimizer,
    scheduler: LRScheduler,
    device: torch.device,
    precision: torch.dtype | None = None,
    grad_clip: float = 0.0,
    label_smoothing: float = 0.0,
    accumulate_steps: int = 1,
    ema: WeightAverage | None = None,
    progress: tqdm | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
    checks: StepChecks | None = None,
) -> EpochStats:
    """One pass over the training batches. Gradients of ``accumulate_steps`` batches are summed
    before each optimizer step (a larger batch in the same memory); the scheduler and the EMA
    follow the optimizer steps. Accumulating needs ``len(batches)``, to make the last group of
    the epoch, which may be shorter, a mean like the others.

    ``stop_requested`` is asked every ``CHECK_EVERY`` batches (``checks`` sets that); when it
    says yes the epoch ends early, marked incomplete. A NaN or inf loss raises ``NonFiniteLoss``
    within two checks.
    """
    model.train()
    stats = _RunningStats(device)
    checks = checks or StepChecks(device, stop_requested)
    num_batches = len(batches) if accumulate_steps > 1 else None  # type: ignore[arg-type]
    for step, (images, targets) in enumerate(_drawn(batches), start=1):
        group_start = (step - 1) // accumulate_steps * accumulate_steps  # batches before its group
        group_size = min(accumulate_steps, num_batches - group_start) if num_batches else 1
        last_of_group = step == group_start + group_size
        # Under DDP, gradients are averaged across processes only on the group's last batch.
        with _sync_gradients(model, last_of_group):
            with labelled(FORWARD), autocast(device, precision):
                logits = model(images)
                loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
            with labelled(BACKWARD):
                (loss / group_size).backward()
        stats.update(loss, logits, targets)
        if last_of_group:
            with labelled(OPTIMIZER_STEP):
                _optimizer_step(model, optimizer, scheduler, grad_clip, ema)
        if progress is not None:
            progress.update(1)
        if checks.due(step):
            stop, diverged = checks.check(stats.loss_sum)
            if diverged:
                raise NonFiniteLoss(
                    f"the training loss became NaN or infinite by step {step} of the epoch"
                )
            if stop:
                return stats.result(complete=False)
    result = stats.result()  # the epoch's one wait: every process's sums
    if not math.isfinite(result.loss):
        raise NonFiniteLoss("the training loss became NaN or infinite during the epoch")
    return result


def _optimizer_step(
    model: nn.Module,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    grad_clip: float,
    ema: WeightAverage | None,
) -> None:
    """One step of the summed gradients (clipped), then the schedule and the EMA follow it."""
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    if ema is not None:
        ema.update()


def labelled(part: str) -> contextlib.AbstractContextManager:
    """``part`` as a range in torch.profiler's trace while one records; nothing otherwise (a
    label costs about 6 us, which a small model's GPU step would feel)."""
    if torch.autograd._profiler_enabled():
        return record_function(part)
    return contextlib.nullcontext()


def _drawn(batches: Iterable) -> Iterator:
    """The batches, each drawn under the label BATCHES while a profiler records: the loader's
    reading, augmentation and copy to the device."""
    if not torch.autograd._profiler_enabled():
        yield from batches
        return
    iterator = iter(batches)
    while True:
        with record_function(BATCHES):
            batch = next(iterator, None)
        if batch is None:
            return
        yield batch


def optimizer_steps(num_batches: int, accumulate_steps: int) -> int:
    """Optimizer steps in an epoch of ``num_batches`` (the last group may be short)."""
    return -(-num_batches // accumulate_steps)


def _sync_gradients(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` while gradients are still being accumulated; a no-op otherwise."""
    ddp = getattr(model, "_orig_mod", model)  # under torch.compile
    if sync or not isinstance(ddp, DistributedDataParallel):
        return contextlib.nullcontext()
    return ddp.no_sync()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    precision: torch.dtype | None = None,
    keep_predictions: bool = False,
) -> EpochStats:
    """Mean loss and accuracy over every process's batches; with ``keep_predictions``, also each
    image's prediction, gathered from every process into the split's order (for the report).

    The logits are read in fp32 whatever the precision, as inference reads them."""
    model.eval()
    stats = _RunningStats(device)
    kept: list[torch.Tensor] = []
    for images, labels in batches:
        with autocast(device, precision):
            logits = model(images).float()
        stats.update(F.cross_entropy(logits, labels), logits, labels)
        if keep_predictions:
            confidence, predicted = logits.softmax(dim=-1).max(dim=-1)
            kept.append(torch.stack([labels.double(), predicted.double(), confidence.double()], 1))
    result = stats.result()
    if keep_predictions:
        rows = gather_shards(
            torch.cat(kept).cpu() if kept else torch.empty(0, 3, dtype=torch.float64)
        )
        result.predictions = Predictions(rows[:, 0].long(), rows[:, 1].long(), rows[:, 2].float())
    return result
