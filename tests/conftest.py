from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]

# With pytest-xdist (`pytest -n 2`, as CI runs) each worker process, and every process a test
# starts, computes with one thread: two workers on two cores, instead of four threads spinning
# for two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
CONFIGS = ROOT / "configs"

# A run small enough for a test: a couple of epochs of a 1-block model, no progress bars, and
# no end-of-run figures (they take most of such a run's time): the tests that look at figures
# ask for them with WITH_FIGURES.
TINY_RUN = [
    "trainer.epochs=2",
    "trainer.progress=false",
    "model.depth=1",
    "model.embed_dim=32",
    "model.num_heads=2",
    "trainer.visualize=false",
]
WITH_FIGURES = "trainer.visualize=true"
# The figures a run with them writes into plots/ (and TensorBoard, W&B, MLflow).
FIGURES = {
    "curves",
    "confusion_matrix",
    "predictions",
    "mistakes",
    "attention",
    "position_similarity",
    "position_norms",
    "patches",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


def torchrun(
    *args: str, processes: int = 2, launch: tuple[str, ...] = ("--standalone",), wait: bool = True
) -> subprocess.CompletedProcess | subprocess.Popen:
    """``torchrun LAUNCH --nproc_per_node=N ARGS`` in the project root (gloo on a CPU); with
    ``wait=False`` the running process, its output in pipes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the processes share this machine's cores
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *launch,
        f"--nproc_per_node={processes}",
        *args,
    ]
    if not wait:
        return subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture
def config():
    return compose_config


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run on a CUDA GPU, and are skipped with the reason without one."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False here")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


def fill_the_disk_at_checkpoint(monkeypatch, number: int) -> None:
    """The disk fills while checkpoint ``number`` (1 = epoch 1's) is written."""
    save, calls = torch.save, []

    def save_until_full(obj, target, *args, **kwargs):
        if ".last.pt." in str(getattr(target, "name", target)):  # checkpoints/.last.pt.PID.tmp
            calls.append(target)
            if len(calls) == number:
                raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_full)
