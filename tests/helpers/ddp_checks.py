"""Run by tests/test_distributed.py under torchrun (2 gloo processes); each rank writes what it
saw to <out>/rank<N>.pt for the test to compare:

- ``main_first``: when each rank entered and left the block (rank 0 must be done first);
- the training loader: every rank draws the same order but its own augmentation;
- a stop request seen by rank 1 alone: both ranks end the epoch at the same step;
- accumulation under DDP (``no_sync``): the weights after one optimizer step of 2 batches.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from src import distributed  # noqa: E402
from src.data import BatchAugment, Split, make_batches  # noqa: E402
from src.training.loops import StepChecks, train_one_epoch  # noqa: E402
from tests.helpers.first_step import global_batch, make_model  # noqa: E402

out = Path(sys.argv[1])
distributed.init(torch.device("cpu"))
rank = distributed.rank()
seen: dict = {}

with distributed.main_first():
    seen["entered"] = time.time()
    time.sleep(0.5 if rank == 0 else 0.0)  # rank 0 "downloads"
    seen["left"] = time.time()

images = torch.arange(32, dtype=torch.uint8).view(32, 1, 1, 1).expand(32, 1, 8, 8).contiguous()
split = Split(images, torch.arange(32) % 10)
batches = make_batches(
    split,
    4,
    image_size=8,
    mean=[0.5],
    std=[0.5],
    device=torch.device("cpu"),
    shuffle=True,
    augment=BatchAugment(crop_padding=2, random_erasing=1.0),
    seed=3,
)
first_images, first_labels = next(iter(batches))
seen["order"] = batches.order_generator.get_state()
seen["first_images"], seen["first_labels"] = first_images, first_labels


class Loop(list):
    """Batches that also count how many were taken."""

    taken = 0

    def __iter__(self):
        for batch in super().__iter__():
            Loop.taken += 1
            yield batch


images, labels = global_batch()
model = make_model()
ddp = DistributedDataParallel(model)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0)
# This rank's two batches of 2: items rank, rank + 2 of each half of the global batch of 8.
mine = [torch.tensor([rank, rank + 2]), torch.tensor([4 + rank, 6 + rank])]
train_one_epoch(
    ddp,
    Loop([(images[i], labels[i]) for i in mine]),
    optimizer,
    scheduler,
    torch.device("cpu"),
    accumulate_steps=2,
)
seen["accumulated"] = {name: p.detach().clone() for name, p in model.named_parameters()}

Loop.taken = 0
many = Loop([(images[:2], labels[:2])] * 10)
checks = StepChecks(
    torch.device("cpu"), stop_requested=lambda: rank == 1 and Loop.taken >= 3, every=2
)
stats = train_one_epoch(ddp, many, optimizer, scheduler, torch.device("cpu"), checks=checks)
seen["stopped_after"], seen["complete"] = Loop.taken, stats.complete

torch.save(seen, out / f"rank{rank}.pt")
distributed.shutdown()
