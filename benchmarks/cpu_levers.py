"""Which settings make a preset's training step faster on this machine? Each as a ratio, in one run.

    python benchmarks/cpu_levers.py +experiment=cifar10_cpu
    python benchmarks/cpu_levers.py +experiment=mnist_cpu --levers trainer.precision=bf16 threads=1
    python benchmarks/cpu_levers.py +experiment=cifar10_cpu --compile   # + torch.compile

It builds the preset's model, optimizer, schedule, loss and EMA and times training steps on random
images of the model's input size, as train.py runs them (forward, backward, clipping, AdamW, the
schedule, the EMA), for the preset as it is and with each lever. A lever is one override of the
preset (trainer.precision=bf16, model.patch_drop_rate=0.5, trainer.batch_size=256, ...) or
threads=N (torch's threads). The presets and levers take turns, round after round, so that a
machine whose speed drifts slows them all alike; it prints each one's median images/s and its ratio
to the preset, and evaluation's images/s (no gradients) beside training's.

With --compile the levers include trainer.compile=true, and its compile time (the first steps,
less the same steps uncompiled) is printed: a run must win it back.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf.errors import OmegaConfBaseException

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from input_pipeline import compose_config  # noqa: E402

from src.errors import ConfigError  # noqa: E402
from src.model.build import build_model  # noqa: E402
from src.training.checks import check_config  # noqa: E402
from src.training.device import configure_backend, resolve_precision  # noqa: E402
from src.training.ema import WeightAverage  # noqa: E402
from src.training.loops import evaluate, train_one_epoch  # noqa: E402
from src.training.optim import build_optimizer  # noqa: E402

CPU = torch.device("cpu")


@dataclass
class Setup:
    """One preset-plus-lever, ready to time: its model, optimizer, schedule, EMA and batches."""

    name: str
    model: torch.nn.Module
    net: torch.nn.Module  # the model, or its torch.compile'd wrapper
    optimizer: torch.optim.Optimizer
    scheduler: object
    ema: WeightAverage | None
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    precision: torch.dtype | None
    grad_clip: float
    label_smoothing: float
    threads: int

    def images(self) -> int:
        return sum(len(labels) for _, labels in self.batches)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        setups = [build(args.overrides, None, args)]
        setups += [build(args.overrides, lever, args) for lever in levers(args)]
    except (ConfigError, HydraException, OmegaConfBaseException) as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)  # Hydra's first line says it
        return 2
    configure_backend(CPU)
    first = {s.name: seconds(lambda s=s: train(s)) for s in setups}  # warm-up; compile happens here
    train_rates = {s.name: [] for s in setups}
    for _ in range(args.repeats):
        for setup in setups:
            train_rates[setup.name].append(setup.images() / seconds(lambda s=setup: train(s)))
    eval_rate = setups[0].images() / statistics.median(
        seconds(lambda: infer(setups[0])) for _ in range(args.repeats)
    )
    print(report(setups, train_rates, eval_rate, first))
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="the preset, e.g. +experiment=cifar10_cpu")
    parser.add_argument(
        "--levers",
        nargs="+",
        default=None,
        help="overrides to compare, one each, or threads=N (default: bf16, threads=1, patch "
        "dropout 0.5 or none and the other pooling (whichever the preset does not use), twice "
        "the batch, twice the patch size, and threads=N for the N cores this process may use "
        "where torch would use another number)",
    )
    parser.add_argument("--compile", action="store_true", help="also time trainer.compile=true")
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the median is printed")
    parser.add_argument("--classes", type=int, default=10, help="classes of the random labels")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be at least 1")
    return args


def levers(args: argparse.Namespace) -> list[str]:
    """The levers asked for, or the defaults for this preset's shape."""
    chosen = list(args.levers) if args.levers else default_levers(args.overrides)
    if args.compile:
        chosen.append("trainer.compile=true")
    return chosen


def default_levers(overrides: list[str]) -> list[str]:
    cfg = compose_config(overrides)
    cores = len(os.sched_getaffinity(0))  # the cores this process may run on
    chosen = [
        "trainer.precision=bf16",
        "threads=1",
        *([f"threads={cores}"] if cores not in (1, torch.get_num_threads()) else []),
        # Patch dropout and pooling switched to what the preset does not use.
        f"model.patch_drop_rate={0 if cfg.model.patch_drop_rate else 0.5}",
        f"model.global_pool={'token' if cfg.model.global_pool == 'avg' else 'avg'}",
        f"trainer.batch_size={2 * cfg.trainer.batch_size}",
    ]
    if cfg.model.image_size % (2 * cfg.model.patch_size) == 0:
        chosen.append(f"model.patch_size={2 * cfg.model.patch_size}")
    return chosen


def build(overrides: list[str], lever: str | None, args: argparse.Namespace) -> Setup:
    """The preset with ``lever`` applied, on random images of its input size, on the CPU."""
    threads = torch.get_num_threads()
    extra = []
    if lever is not None and lever.startswith("threads="):
        count = lever.split("=", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise ConfigError(f"{lever} must name at least one thread, e.g. threads=1.")
        threads = int(count)
    elif lever is not None:
        extra = [lever]
    cfg = compose_config([*overrides, *extra, "trainer.device=cpu"])
    check_config(cfg)
    channels = cfg.dataset.channels if isinstance(cfg.dataset.get("channels"), int) else 3
    torch.manual_seed(0)
    model = build_model(cfg.model, channels, args.classes)
    optimizer = build_optimizer(instantiate(cfg.optimizer), model, CPU)
    scheduler = instantiate(cfg.scheduler)(optimizer, steps_per_epoch=args.steps, epochs=1000)
    size, batch = cfg.model.image_size, cfg.trainer.batch_size
    generator = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(batch, channels, size, size, generator=generator),
            torch.randint(0, args.classes, (batch,), generator=generator),
        )
        for _ in range(args.steps)
    ]
    return Setup(
        name=lever or "the preset",
        model=model,
        net=torch.compile(model) if cfg.trainer.compile else model,
        optimizer=optimizer,
        scheduler=scheduler,
        ema=WeightAverage(model, cfg.trainer.ema_decay) if cfg.trainer.ema else None,
        batches=batches,
        precision=resolve_precision(cfg.trainer.precision, CPU),
        grad_clip=cfg.trainer.grad_clip,
        label_smoothing=cfg.trainer.label_smoothing,
        threads=threads,
    )


def train(setup: Setup) -> None:
    with threads(setup.threads):
        train_one_epoch(
            setup.net,
            setup.batches,
            setup.optimizer,
            setup.scheduler,
            CPU,
            setup.precision,
            grad_clip=setup.grad_clip,
            label_smoothing=setup.label_smoothing,
            ema=setup.ema,
        )


def infer(setup: Setup) -> None:
    with threads(setup.threads):
        evaluate(setup.net, setup.batches, CPU, setup.precision)


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block, then put back."""
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def seconds(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def report(setups: list[Setup], rates: dict, eval_rate: float, first: dict) -> str:
    preset = statistics.median(rates[setups[0].name])
    width = max(len(s.name) for s in setups)
    lines = [
        f"CPU: {cpu_name()}; torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"{len(os.sched_getaffinity(0))} cores to run on",
        f"{'':<{width}}  {'train images/s':>14}  {'x preset':>8}",
    ]
    for setup in setups:
        median = statistics.median(rates[setup.name])
        lines.append(f"{setup.name:<{width}}  {median:>14,.0f}  {median / preset:>7.2f}x")
    lines.append(
        f"evaluation of the preset: {eval_rate:,.0f} images/s, "
        f"{eval_rate / preset:.1f}x its training images/s"
    )
    compiled = [s for s in setups if s.net is not s.model]
    for setup in compiled:
        steady = setup.images() / statistics.median(rates[setup.name])
        lines.append(f"{setup.name}: compile time {first[setup.name] - steady:.1f} s")
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name and whether it has native bf16 (AVX-512 BF16 or AMX)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), "unknown")  # fmt: skip
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    native = "avx512_bf16" in flags.split() or "amx_bf16" in flags.split()
    return f"{name} ({'native' if native else 'no native'} bf16)"


if __name__ == "__main__":
    sys.exit(main())
