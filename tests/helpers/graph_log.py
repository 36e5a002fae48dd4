"""Counts the graphs torch.compile makes in each call of the training and evaluation loops."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import torch._dynamo.utils


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process so far; every recompile adds one."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def count_graphs_per_call(
    module: ModuleType, patch: Callable[[object, str, object], None] = setattr
) -> list[tuple[str, int]]:
    """Wraps ``module``'s train_one_epoch and evaluate (with ``patch``, e.g. pytest's
    monkeypatch.setattr) so that each call appends (``"train"`` or ``"eval"``, graphs compiled
    during it) to the list returned."""
    calls: list[tuple[str, int]] = []

    def counted(phase: str, loop: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            before = graphs_compiled()
            try:
                return loop(*args, **kwargs)
            finally:
                calls.append((phase, graphs_compiled() - before))

        return wrapper

    patch(module, "train_one_epoch", counted("train", module.train_one_epoch))
    patch(module, "evaluate", counted("eval", module.evaluate))
    return calls
