"""Run by tests/test_cuda.py under torchrun on GPUs: NCCL's collectives work, with any number of
processes, one (which train.py runs without a process group) included. Exits non-zero if not."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
torch.cuda.set_device(device)
dist.init_process_group("nccl", rank=rank, world_size=world)
assert dist.get_backend() == "nccl"

summed = torch.full((4,), float(rank + 1), device=device)
dist.all_reduce(summed)  # 1 + 2 + ... + world on every rank
assert summed.eq(world * (world + 1) / 2).all(), summed
shared = torch.full((4,), float(rank), device=device)
dist.broadcast(shared, src=0)
assert shared.eq(0).all(), shared
dist.barrier()
dist.destroy_process_group()
print(f"rank {rank}/{world}: NCCL all_reduce, broadcast and barrier agree")
