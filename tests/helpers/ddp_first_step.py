"""Run by tests/test_distributed.py under torchrun: the gradients of one DDP step on a fixed
global batch, each process taking its share as the training loaders do; rank 0 saves them."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from src import distributed  # noqa: E402
from tests.helpers.first_step import global_batch, make_model  # noqa: E402

distributed.init(torch.device("cpu"))
model = make_model()
images, labels = global_batch()
mine = distributed.shard(torch.arange(len(labels)), pad=True)
ddp = DistributedDataParallel(model)  # kept alive: its hooks average the gradients in backward()
loss = F.cross_entropy(ddp(images[mine]), labels[mine])
loss.backward()
if distributed.is_main():
    torch.save({name: p.grad for name, p in model.named_parameters()}, sys.argv[1])
distributed.shutdown()
