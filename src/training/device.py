"""The device and numbers a run computes with: CPU or GPU, fp32 or bf16, TF32, and every random
generator's state (saved in checkpoints, so that a resumed run draws the same numbers)."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from src.errors import ConfigError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict:
    """Every random generator's state in this process (the CUDA one of its own GPU), as plain
    types and tensors (loadable with weights_only)."""
    _, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(key.copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: dict) -> None:
    """Puts back what ``rng_state`` saved, so a resumed run draws the same numbers."""
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy["key"].numpy(),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if torch.cuda.is_available() and len(cuda):
        if isinstance(cuda, torch.Tensor):
            torch.cuda.set_rng_state(cuda)
        else:  # checkpoints from before per-process states: one state per GPU
            torch.cuda.set_rng_state_all(cuda)


def resolve_device(name: str, setting: str = "trainer.device=") -> torch.device:
    """'auto' picks CUDA when there is a GPU, else the CPU. ``setting`` is how the sentences
    write the setting before its value: a script's flag is "--device "."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"{setting}{name} was asked for, but PyTorch sees no CUDA GPU here; "
            f"use {setting}auto or {setting}cpu."
        )
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"{setting}{name!r} is not known; use auto, cpu or cuda.")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. 'auto' is bf16 on a GPU that has it natively."""
    bf16_ok = device.type == "cpu" or native_bf16()
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and bf16_ok else None
    if name == "fp32":
        return None
    if name == "bf16":
        if not bf16_ok:
            raise ConfigError(
                "trainer.precision=bf16 was asked for, but this GPU has no native bfloat16 "
                "support (it could only emulate it, slower than fp32); use trainer.precision=fp32."
            )
        return torch.bfloat16
    raise ConfigError(f"trainer.precision={name!r} is not known; use auto, fp32 or bf16.")


def native_bf16() -> bool:
    """bf16 in hardware on the current GPU. Pre-Ampere GPUs (V100, T4) only emulate it, slower
    than fp32, and ``is_bf16_supported()`` counts emulation by default."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch has no such argument: native bf16 came with Ampere (8.0)
        return torch.cuda.get_device_capability()[0] >= 8


def configure_backend(device: torch.device) -> None:
    # Denormal floats (below 1e-38, too small to matter to training) are up to 100x slower on
    # CPUs; a new model's first steps make many, which measurably slowed every early CPU step.
    torch.set_flush_denormal(True)
    if device.type == "cuda":
        # TF32 matmuls: a large speed-up on Ampere and newer, at no cost to training quality.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


@contextlib.contextmanager
def exact_fp32():
    """Plain fp32 for the span: no TF32 matmuls or convolutions on a GPU (``configure_backend``
    turns them on for training). The final test runs so, as inference.py predicts, so that
    ``inference.py --report`` gives the test accuracy and loss in summary.json."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
