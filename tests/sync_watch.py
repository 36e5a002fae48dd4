"""Finding the places where the CPU would wait for a GPU, on a machine without one.

``DeviceSyncWatch`` follows which tensors live "on the device" (the model's weights, the data held
on the device, and everything computed from them or moved there) and records every operation
that, on a GPU, would make the CPU wait for it:

- reading a device tensor on the CPU: ``.item()``, ``.tolist()``, ``bool()``, ``int()``,
  ``float()``, ``.cpu()``, ``.numpy()``, or ops whose output size depends on the data
  (``nonzero``, ``masked_select``, ``unique``, boolean-mask indexing);
- putting host data on the device with a blocking copy: ``torch.tensor(..., device=)``,
  ``.to(device)`` without ``non_blocking=True``, or a CPU tensor (not a 0-dim scalar) handed to
  an operation on device tensors (an implicit copy).

A non-blocking ``copy_`` into a tensor that is not on the device is the sanctioned way back (into
pinned memory), and a ``.to(..., non_blocking=True)`` the sanctioned way there.
"""

from __future__ import annotations

import contextlib
import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

Tensor = torch.Tensor
READS = {
    Tensor.item,
    Tensor.tolist,
    Tensor.__bool__,
    Tensor.__int__,
    Tensor.__float__,
    Tensor.__index__,
    Tensor.cpu,
    Tensor.numpy,
    Tensor.nonzero,
    torch.nonzero,
    Tensor.masked_select,
    torch.masked_select,
    Tensor.unique,
    torch.unique,
    torch.unique_consecutive,
    Tensor.repeat_interleave,
    torch.repeat_interleave,
}
FROM_PYTHON = {torch.tensor, torch.as_tensor, torch.asarray}
MOVES = {Tensor.to, Tensor.cuda}
INDEXING = {Tensor.__getitem__, Tensor.__setitem__}


class DeviceSyncWatch(TorchFunctionMode):
    def __init__(self, on_device: list[Tensor]):
        super().__init__()
        self._device = WeakIdKeyDictionary()
        for tensor in on_device:
            self._device[tensor] = True
        self.recording = False
        self.waits: list[str] = []

    def is_on_device(self, tensor: Tensor) -> bool:
        return tensor in self._device

    def _mark(self, tensors) -> None:
        for t in tensors:
            self._device[t] = True

    def _record(self, what: str) -> None:
        if self.recording:
            frame = next(
                (
                    f
                    for f in reversed(traceback.extract_stack()[:-2])
                    if "/torch/" not in f.filename and f.filename != __file__
                ),
                None,
            )
            self.waits.append(f"{what} at {frame.filename}:{frame.lineno}" if frame else what)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, Tensor)]
        on_device = [t for t in tensors if self.is_on_device(t)]
        name = getattr(func, "__qualname__", getattr(func, "__name__", str(func)))

        if func in FROM_PYTHON and kwargs.get("device") is not None and not _optimizer_step_count():
            self._record(f"{name}(..., device=) built from Python data")
        if (
            func in MOVES
            and not on_device
            and _names_a_device(args[1:], kwargs)
            and not kwargs.get("non_blocking", False)
            and tensors
            and tensors[0].numel() > 1
        ):
            self._record(f"{name} blocking copy to the device")
        if on_device:
            if func in READS:
                self._record(f"{name} read on the CPU")
            if func in INDEXING and any(t.dtype == torch.bool for t in tensors[1:]):
                self._record(f"{name} with a boolean mask")
            host = [t for t in tensors if not self.is_on_device(t) and t.dim() > 0]
            if host and not _copy_back(func, args, kwargs):
                self._record(f"{name} given a CPU tensor {tuple(host[0].shape)}")

        result = func(*args, **kwargs)
        if func is Tensor.__iter__ and on_device:  # `a, b = t`: the pieces are on the device too
            result = list(result)
            self._mark(result)
            return iter(result)

        outputs = [t for t in tree_flatten(result)[0] if isinstance(t, Tensor)]
        if not tensors and kwargs.get("device") is not None and func not in FROM_PYTHON:
            self._mark(outputs)  # made on the device: torch.arange(n, device=...), ...
        elif func in MOVES and _names_a_device(args[1:], kwargs):
            self._mark(outputs)  # now on the device (a blocking move was recorded above)
        elif on_device and not _copy_back(func, args, kwargs):
            # Everything an op on device tensors writes or returns is on the device, including
            # tensors it changed in place (foreach ops return None).
            self._mark(outputs)
            if name.endswith("_"):
                self._mark(tensors)
        return result

    @contextlib.contextmanager
    def recording_waits(self):
        self.recording = True
        try:
            yield
        finally:
            self.recording = False


def _optimizer_step_count() -> bool:
    """torch.optim's foreach path wraps the +1 of its step counts, which live on the CPU (unless
    ``capturable``), in ``torch.tensor(1.0, device="cpu")``: a CPU tensor, no copy to the GPU."""
    caller = traceback.extract_stack()[-3]
    return "/torch/optim/" in caller.filename


def _names_a_device(args, kwargs) -> bool:
    if "device" in kwargs:
        return True
    return any(isinstance(a, (torch.device, str)) for a in args)


def _copy_back(func, args, kwargs) -> bool:
    """``host.copy_(device_tensor, non_blocking=True)``: the sanctioned copy back to the CPU."""
    return func is Tensor.copy_ and (kwargs.get("non_blocking") or (len(args) > 2 and args[2]))
