"""Run by tests/test_distributed.py under ``torchrun --max-restarts``: train.py with its Hydra
overrides, in which ranks kill themselves with SIGKILL (no handler runs, nothing is written) where
the first argument says: ``START:RANK:EPOCH:STEP[,...]``, e.g. ``0:1:1:4,1:0:2:4`` = at the first
start of the workers, rank 1 dies at step 4 of epoch 1; at the second (torchrun's restart 1),
rank 0 dies at step 4 of the epoch it counts as its 2nd. A fifth field waits that many seconds
before the kill (``0:0:3:2:1``: time for a W&B service to write what it was sent).

    python -m torch.distributed.run --standalone --nproc_per_node=2 --max-restarts=2 \\
        tests/helpers/dying_train.py 0:1:1:4,1:0:2:4 trainer.epochs=2 ...
"""

from __future__ import annotations

import functools
import os
import runpy
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import src.training.fit  # noqa: E402
from src import distributed  # noqa: E402

deaths = {tuple(float(n) for n in spec.split(":")) for spec in sys.argv.pop(1).split(",")}
train_one_epoch = src.training.fit.train_one_epoch
epochs_started = 0


class _DiesAtStep:
    """Stands in for the epoch's progress bar, which the loop updates after every step."""

    def __init__(self, bar, step: int, wait: float = 0.0):
        self.bar, self.step, self.wait, self.steps = bar, step, wait, 0

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.steps += n
        if self.steps == self.step:
            time.sleep(self.wait)
            os.kill(os.getpid(), signal.SIGKILL)


@functools.wraps(train_one_epoch)
def dying_train_one_epoch(*args, **kwargs):
    global epochs_started
    epochs_started += 1
    for start, rank, epoch, step, *wait in deaths:
        if (start, rank, epoch) == (
            distributed.restart_count(),
            distributed.rank(),
            epochs_started,
        ):
            kwargs["progress"] = _DiesAtStep(kwargs["progress"], step, *wait)
    return train_one_epoch(*args, **kwargs)


src.training.fit.train_one_epoch = dying_train_one_epoch  # the loop as the fit calls it
sys.argv[0] = str(ROOT / "train.py")
runpy.run_path(sys.argv[0], run_name="__main__")  # as `python train.py ...`, for Hydra
