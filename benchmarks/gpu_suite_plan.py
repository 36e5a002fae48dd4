"""The GPU suite's plan: its parts in priority order, each with its command and a guess of the
seconds it needs, for a GPU machine or for the CPU dry run. Standard library only, as the suite.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from gpu_suite_device import cifar_root, data_dirs, mnist_root

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ["model.depth=1", "model.embed_dim=32", "model.num_heads=2"]
QUIET = ["trainer.progress=false"]


class Skip(Exception):
    """A part that cannot run here; the message says why."""


@dataclass
class Part:
    name: str
    need: float  # seconds it needs at least, until a call has measured it
    command: Callable[[], list[str]]  # raises Skip with the reason when it cannot run
    training: bool = False
    needs_hydra: bool = True


def plan(args: argparse.Namespace) -> list[Part]:
    dry = args.dry_run
    return [
        Part("cuda-tests", 5 if dry else 120, partial(cuda_tests, args)),
        Part("check-gpu", 3 if dry else 45, partial(check_gpu, args), needs_hydra=False),
        Part(
            "model-speed-eager",
            5 if dry else 60,
            partial(model_speed, args, compiled=False),
            needs_hydra=False,
        ),
        # about 12 cold compiles (ours and timm; training, batch and one-image graphs; 2 shapes)
        Part(
            "model-speed-compiled",
            5 if dry else 360,
            partial(model_speed, args, compiled=True),
            needs_hydra=False,
        ),
        Part("input-pipeline", 5 if dry else 90, partial(input_pipeline, args)),
        Part("mnist", 5 if dry else 60, partial(train, args, "mnist"), training=True),
        Part("cifar10", 5 if dry else 60, partial(train, args, "cifar10"), training=True),
    ]


def cuda_tests(args: argparse.Namespace) -> list[str]:
    files = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "tests").glob("test_*.py"))
        if "mark.cuda" in p.read_text()
    ]
    if not files:
        raise Skip("no test is marked cuda")
    return [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "cuda",
        "-n",
        "0",  # in this process: a few files, one GPU (the addopts' workers would each start torch)
        "-q",
        "-ra",
        "-p",
        "no:cacheprovider",
        "-o",
        "junit_family=xunit1",  # the flavour that keeps the tests' recorded figures
        f"--junitxml={args.work / 'cuda_tests.xml'}",
        *files,
    ]


def check_gpu(args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "-m",
        "src.training.gpu_check",
        f"--json-file={args.work / 'gpu_check.json'}",
        *(["--no-compile"] if args.dry_run else []),
    ]


def model_speed(args: argparse.Namespace, compiled: bool) -> list[str]:
    dry = args.dry_run
    if dry and compiled:
        raise Skip("dry run: compiling on a CPU takes minutes; the eager part checks the command")
    if importlib.util.find_spec("timm") is None:
        raise Skip("timm is not installed (model_speed.py compares against it)")
    shapes = ["tiny32", "base224"] if compiled else ["tiny32", "small224", "base224"]
    tiny = ["--batch-size", "2", "--steps", "1", "--repeats", "1", "--depth", "1"]
    return [
        sys.executable,
        "benchmarks/model_speed.py",
        "--device",
        "cpu" if dry else "cuda",
        "--precision",
        "bf16",
        "--shapes",
        *(["tiny32"] if dry else shapes),
        *(tiny if dry else []),
        *(["--compile"] if compiled else []),
    ]


def input_pipeline(args: argparse.Namespace) -> list[str]:
    if args.dry_run:
        return [
            sys.executable,
            "benchmarks/input_pipeline.py",
            "--device",
            "cpu",
            "--images",
            "64",
            "--repeats",
            "1",
            "--model-steps",
            "1",
            "--batch-size",
            "32",
            "--workers",
            "0",
            "model=vit_digits",
            "model.image_size=16",
            "model.depth=1",
        ]
    cifar = cifar_root(args.data)
    return [
        sys.executable,
        "benchmarks/input_pipeline.py",
        "--device",
        "cuda",
        *(["--folder", str(cifar)] if cifar else []),
    ]


def train(args: argparse.Namespace, preset: str) -> list[str]:
    if args.dry_run and preset == "mnist":
        raise Skip("dry run: the cifar10 part runs the same command on the digits (to save time)")
    if args.dry_run:
        return train_digits()
    return train_mnist(args.data) if preset == "mnist" else train_cifar10(args.data)


def train_digits() -> list[str]:
    """The dry run's stand-in: the digits in scikit-learn, a 1-block model, 5 epochs (the suite's
    test cuts it, then resumes it)."""
    return [
        sys.executable,
        "train.py",
        "dataset=digits",
        "trainer.epochs=5",
        *TINY_MODEL,
        "trainer.device=cpu",
        "trainer.visualize=false",
        "trainer.batch_size=128",
        *QUIET,
    ]


def train_mnist(data: Path | None) -> list[str]:
    root = mnist_root(data)
    if root is None:
        raise Skip(f"no MNIST/raw/ nor mnist-raw.tar.gz under {data_dirs(data)}; pass --data DIR")
    return [
        sys.executable,
        "train.py",
        "+experiment=mnist",
        f"dataset.root={root}",
        "dataset.download=false",
        *QUIET,
    ]


def train_cifar10(data: Path | None) -> list[str]:
    root = cifar_root(data)
    if root is None:
        raise Skip(
            f"no cifar10-jpeg/ nor cifar10-jpeg.tar.gz under {data_dirs(data)}; pass --data DIR"
        )
    return [
        sys.executable,
        "train.py",
        "+experiment=cifar10",
        "dataset=folder",
        f"dataset.root={root}",
        *QUIET,
    ]
