"""Where an epoch's time goes: one epoch of a preset, as train.py runs it, under torch.profiler.

    python benchmarks/where_time_goes.py +experiment=cifar10_cpu dataset.root=dataset_path/cifar10
    python benchmarks/where_time_goes.py +experiment=mnist_cpu dataset.root=../shared/data

It builds the run as train.py does (the preset's data, model, optimizer, schedule and EMA) in a
temporary run folder, trains one epoch unprofiled (the warm-up, timed), then profiles the next:
training, split into drawing the batches (reading, augmentation, the copy to the device), forward
and loss, backward and the optimizer step (clipping, AdamW, the schedule, the EMA); validation;
the checkpoint and best weights; metrics.csv, summary.json and the logs. The parts are the ranges
that src/training/fit.py and loops.py label while a profiler records; each is printed in seconds
and as a share of the profiled epoch, then the operators that took the most time.
"""

from __future__ import annotations

import os

os.environ.setdefault("KINETO_LOG_LEVEL", "99")  # the profiler's own start and stop lines

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from hydra.errors import HydraException  # noqa: E402
from omegaconf import open_dict  # noqa: E402
from omegaconf.errors import OmegaConfBaseException  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from input_pipeline import compose_config  # noqa: E402

from src.errors import ConfigError  # noqa: E402
from src.runs.folder import RunFolder  # noqa: E402
from src.training import fit, loops  # noqa: E402
from src.training.checks import check_config  # noqa: E402
from src.training.setup import Training, build  # noqa: E402
from src.training.stopping import StopRequest  # noqa: E402

# The epoch's parts, in the order printed; the step's parts are inside TRAINING.
STEP_PARTS = (loops.BATCHES, loops.FORWARD, loops.BACKWARD, loops.OPTIMIZER_STEP)
EPOCH_PARTS = (fit.TRAINING, fit.VALIDATION, fit.CHECKPOINT, fit.LOGS)
REST_OF_LOOP = "the rest of the loop (metrics, checks, progress)"
NAME_WIDTH = 58  # the table's first column; longer operator names are cut


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. +experiment=NAME")
    parser.add_argument("--top", type=int, default=8, help="operators to list (default 8)")
    args = parser.parse_args(argv)
    try:
        cfg = compose_config(args.overrides)
        check_config(cfg)
    except (ConfigError, HydraException, OmegaConfBaseException) as err:
        print(err, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="where-time-goes-") as folder:
        with open_dict(cfg):
            cfg.trainer.epochs, cfg.trainer.progress = 2, False  # a warm-up epoch and the profiled
        run = RunFolder(folder)
        try:
            t = build(cfg, run, None)
            warmup = run_epochs(cfg, run, t, until=1)
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                profiled = run_epochs(cfg, run, t, until=2)
        finally:
            run.close()
    events = profiler.key_averages()  # aggregating a whole epoch's events takes a while: once
    parts = part_seconds(events)
    print(
        f"{cfg.model.name} on {t.data.name}: one epoch of {len(t.state.train_batches)} steps "
        f"of {cfg.trainer.batch_size} and {len(t.data.val):,} validation images, "
        f"{torch.get_num_threads()} threads, {t.device}"
    )
    print(f"profiled epoch: {profiled:.1f} s (the warm-up epoch before it: {warmup:.1f} s)")
    print(parts_table(parts, profiled))
    print(top_operators(events, profiled, args.top))
    return 0


def run_epochs(cfg, run: RunFolder, t: Training, until: int) -> float:
    """fit() up to epoch ``until``, as train.py runs it; its wall time."""
    with open_dict(cfg):
        cfg.trainer.epochs = until
    start = time.perf_counter()
    fit.fit(cfg, run, t, StopRequest())
    return time.perf_counter() - start


def part_seconds(events) -> dict[str, float]:
    """Seconds in each labelled range (a range's CPU total is its wall time on the main thread),
    and the training loop's time outside the step's parts."""
    totals = {event.key: event.cpu_time_total / 1e6 for event in events}
    parts = {name: totals.get(name, 0.0) for name in EPOCH_PARTS + STEP_PARTS}
    parts[REST_OF_LOOP] = max(parts[fit.TRAINING] - sum(parts[p] for p in STEP_PARTS), 0.0)
    return parts


def parts_table(parts: dict[str, float], total: float) -> str:
    lines = [f"{'part':<{NAME_WIDTH}} {'seconds':>8} {'share':>6}"]
    for name in EPOCH_PARTS:
        lines.append(_part_line(name, parts[name], total))
        if name == fit.TRAINING:
            lines += [_part_line(f"  {p}", parts[p], total) for p in STEP_PARTS + (REST_OF_LOOP,)]
    covered = sum(parts[name] for name in EPOCH_PARTS)
    lines.append(_part_line("the epoch outside these parts", max(total - covered, 0.0), total))
    return "\n".join(lines)


def _part_line(name: str, seconds: float, total: float) -> str:
    return f"{name:<{NAME_WIDTH}} {seconds:8.2f} {seconds / total:6.1%}"


def top_operators(events, total: float, top: int) -> str:
    """The operators with the most self time (time in the operator itself, not in those it
    calls), as shares of the profiled epoch."""
    labels = set(EPOCH_PARTS + STEP_PARTS)
    ops = [e for e in events if e.key not in labels and not e.key.startswith("ProfilerStep")]
    ops.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    lines = [f"the {top} operators with the most self time:"]
    for event in ops[:top]:
        seconds = event.self_cpu_time_total / 1e6
        name = event.key[: NAME_WIDTH - 2]
        lines.append(
            f"  {name:<{NAME_WIDTH - 2}} {seconds:8.2f} {seconds / total:6.1%}  x{event.count:,}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
