"""Several processes, one run: torchrun and DistributedDataParallel.

    torchrun --standalone --nproc_per_node=4 train.py ...          # 4 GPUs (or 4 CPU processes)

torchrun starts one process per device and tells each its RANK, LOCAL_RANK and WORLD_SIZE. Every
process trains on its share of each epoch and DDP averages the gradients, so the model stays the
same everywhere; metrics are summed across processes; only rank 0 writes the run folder. Without
torchrun (WORLD_SIZE unset) everything here is a no-op and training is single-process.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Iterator
from datetime import datetime, timedelta

import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return world_size() > 1


@functools.cache
def _job_store() -> dist.Store:
    """torchrun's key-value store, reached the way init_process_group('env://') reaches it. It
    lives as long as the torchrun job, across the restarts of its workers."""
    store, _, _ = next(dist.rendezvous("env://"))
    return store


@functools.cache
def _store() -> dist.Store:
    """The job's store under a prefix for this start of the workers: the keys one start's
    process group sets there (its ranks' addresses) must not be read by the next start's."""
    return dist.PrefixStore(f"vit-workbench/start-{restart_count()}/", _job_store())


def restart_count() -> int:
    """How many times torchrun has started this job's workers again (``--max-restarts``, or a
    node joining or leaving an elastic job); 0 for the first start, and without torchrun."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


@functools.cache
def shared_now(fmt: str) -> str:
    """``datetime.now().strftime(fmt)``, the same on every rank (rank 0's clock), so that all the
    processes of a run agree on its dated folder. The first start of the job sets it once in
    torchrun's store, which outlives the workers: workers that torchrun starts again find the
    same time there, so they name the same folder and continue the run in it."""
    if not launched():
        return datetime.now().strftime(fmt)
    key = f"vit-workbench/now/{fmt}"
    if is_main():  # sets the key only where it is not set yet
        _job_store().compare_set(key, "", datetime.now().strftime(fmt))
    return _job_store().get(key).decode()  # waits for rank 0


def init(device: torch.device) -> torch.device:
    """Joins the process group (NCCL on CUDA, gloo on CPU); returns this process's device."""
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=_store(), rank=rank(), world_size=world_size())
        _control_group()  # made now, while every rank is here to make it
    return device


@functools.cache
def _control_group() -> dist.ProcessGroup:
    """A gloo group for the ranks' small agreements (stop?, diverged?, data ready, RNG states):
    its messages are CPU tensors, so agreeing never waits for a GPU, and its long timeout lets
    rank 0 download and decode a dataset while the others wait."""
    return dist.new_group(backend="gloo", timeout=timedelta(hours=2))


def shutdown(together: bool = True) -> None:
    """Leaves the process group (``together``: once every rank is here to leave it too), and lets
    go of the store, so no background thread outlives the interpreter (which aborts the
    process). A failing rank leaves alone: the rank that failed first may be gone already."""
    if dist.is_initialized():
        if together:
            barrier()
        dist.destroy_process_group()
    _job_store.cache_clear()
    _store.cache_clear()
    _control_group.cache_clear()


def active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if active():
        dist.all_reduce(tensor)
    return tensor


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """Each flag true on every rank if it is true on any (a stop request seen by one process, a
    loss that went NaN on one): every rank then takes the same decision at the same step."""
    if not active():
        return flags
    values = torch.tensor(flags, dtype=torch.int32)
    dist.all_reduce(values, op=dist.ReduceOp.MAX, group=_control_group())
    return tuple(bool(v) for v in values.tolist())


def gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` (tensors and plain data), in rank order, on every rank (a list of one
    without torchrun). It travels as ``torch.save`` bytes, read back with ``weights_only``:
    ``all_gather_object`` cannot unpickle tensors itself in recent torch."""
    if not active():
        return [obj]
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    gathered: list[bytes] = [b""] * dist.get_world_size()
    dist.all_gather_object(gathered, buffer.getvalue(), group=_control_group())
    return [torch.load(io.BytesIO(data), weights_only=True) for data in gathered]


def gather_shards(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of a split from every rank's share of it (``shard(..., pad=False)``: rank r has
    items r, r + world, ...), back in the split's order. ``tensor`` is on the CPU."""
    if not active():
        return tensor
    shares = gather_objects(tensor)
    whole = tensor.new_empty((sum(len(s) for s in shares), *tensor.shape[1:]))
    for r, share in enumerate(shares):
        whole[r :: len(shares)] = share
    return whole


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 does the work first (download, decode, cache) while the others wait; then they do
    it too, and find it done."""
    if active() and not is_main():
        dist.barrier(group=_control_group())
    yield
    if active() and is_main():
        dist.barrier(group=_control_group())


def broadcast_weights(model: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers to every rank."""
    if active():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def barrier() -> None:
    if active():
        dist.barrier(group=_control_group())


def shard(order: torch.Tensor, pad: bool) -> torch.Tensor:
    """This rank's share of an epoch's order. With ``pad`` (training) the order is first wrapped
    around to a multiple of the world size, so every rank takes the same number of steps, as
    DistributedSampler does."""
    world = dist.get_world_size() if active() else 1
    if world == 1:
        return order
    if pad:
        order = torch.cat([order, order[: (-len(order)) % world]])
    return order[dist.get_rank() :: world]


def shard_size(n: int, pad: bool) -> int:
    """len(shard(order of n, pad)) on this rank."""
    world = dist.get_world_size() if active() else 1
    if pad:
        return -(-n // world)
    return len(range(dist.get_rank() if active() else 0, n, world))
