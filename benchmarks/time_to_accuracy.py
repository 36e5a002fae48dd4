"""Time to accuracy: train a preset (or read a run that has ended) and print when validation
accuracy first reached each level, the whole run's wall time and test accuracy, and the training
images/s beside what this machine's matrix multiply achieves on the same cores.

    python benchmarks/time_to_accuracy.py +experiment=mnist_cpu dataset.root=../shared/data
    python benchmarks/time_to_accuracy.py --run outputs/2026-12-06/14-30-00 --levels 0.99 0.995

Times come from the run's metrics.csv: ``run_seconds`` is the run's time at the end of an
epoch's validation, from its start, data preparation included. The whole run's wall time is
the train.py process from start to exit, as the command above measures it (with --run: the
run's own ``train_seconds``, which leaves out Python's start).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.errors import ConfigError  # noqa: E402
from src.model.vit import VisionTransformer  # noqa: E402
from src.runs.catalogue import Run  # noqa: E402
from src.runs.folder import read_metrics  # noqa: E402

LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99, 0.995)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run:
        run_dir, wall = Path(args.run), None
    else:
        run_dir = (
            args.out
            or ROOT / "outputs" / "time-to-accuracy" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
        )
        wall = train(args.overrides, run_dir)
        if wall is None:
            return 1
    try:
        metrics, run = read_metrics(run_dir), Run.read(run_dir)
    except ConfigError as err:  # a damaged metrics.csv, in one sentence
        print(err, file=sys.stderr)
        return 1
    if metrics is None or "run_seconds" not in metrics or "train_seconds" not in run.summary:
        print(
            f"{run_dir} has no finished epochs with run_seconds (a run written before "
            "2026-12-06, or one that has not ended): train it again to time it.",
            file=sys.stderr,
        )
        return 1
    summary = run.summary
    print(f"run: {run_dir} ({summary.get('model')} on {summary.get('dataset')})")
    print(levels_table(metrics, args.levels))
    whole = (
        f"{wall:.1f} s wall (train.py, start to exit)"
        if wall is not None
        else f"{summary['train_seconds']:.1f} s (train_seconds)"
    )
    print(f"whole run: {whole}; test acc {summary.get('test_acc', float('nan')):.2%}")
    print(time_split(metrics, summary, wall))
    print(speed_line(metrics, run.card["model"]))
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "overrides", nargs="*", help="train.py overrides, e.g. +experiment=mnist_cpu"
    )
    parser.add_argument("--run", help="read this run folder instead of training")
    parser.add_argument("--out", type=Path, help="the new run's folder (default under outputs/)")
    parser.add_argument("--levels", type=float, nargs="+", default=LEVELS, metavar="ACC")
    args = parser.parse_args(argv)
    if bool(args.run) == bool(args.overrides):
        parser.error("give train.py overrides (a preset) or --run RUN_FOLDER, one of the two")
    if not all(0 < level <= 1 for level in args.levels):
        parser.error("--levels are accuracies between 0 and 1, e.g. 0.9 0.99")
    if args.run and not (Path(args.run) / "summary.json").is_file():
        parser.error(f"--run {args.run}: no summary.json there; give a run folder")
    return args


def train(overrides: list[str], run_dir: Path) -> float | None:
    """Runs train.py into ``run_dir``; its wall time, or None (said) when it failed."""
    command = [sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}"]
    print("running:", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        print(f"train.py failed (exit {done.returncode}); nothing measured.", file=sys.stderr)
        return None
    return wall


def time_to_levels(metrics: pd.DataFrame, levels) -> list[tuple[float, int | None, float | None]]:
    """(level, first epoch at or above it, run_seconds then) per level; None where never. The
    EMA's validation accuracy counts too: the run keeps whichever weights were better."""
    accuracy = best_accuracy(metrics)
    rows = []
    for level in levels:
        reached = metrics[accuracy >= level]
        if reached.empty:
            rows.append((level, None, None))
        else:
            rows.append(
                (level, int(reached["epoch"].iloc[0]), float(reached["run_seconds"].iloc[0]))
            )
    return rows


def best_accuracy(metrics: pd.DataFrame) -> pd.Series:
    """Each epoch's validation accuracy, the EMA's where higher: the run keeps the better."""
    if "ema_val_acc" not in metrics:
        return metrics["val_acc"]
    return metrics[["val_acc", "ema_val_acc"]].max(axis=1)


def levels_table(metrics: pd.DataFrame, levels) -> str:
    lines = ["val acc  epoch  seconds from the start"]
    for level, epoch, seconds in time_to_levels(metrics, levels):
        if epoch is None:
            lines.append(
                f"{level:7.2%}      -  not reached (best {best_accuracy(metrics).max():.2%})"
            )
        else:
            lines.append(f"{level:7.2%}  {epoch:5d}  {seconds:.1f}")
    return "\n".join(lines)


def time_split(metrics: pd.DataFrame, summary: dict, wall: float | None) -> str:
    """Where the whole run's time went, from metrics.csv: an epoch's training is its training
    images over its images/s, the rest of ``epoch_seconds`` its validation; what lies between one
    epoch's end and the next one's start is the checkpoint and the logs."""
    total = wall if wall is not None else summary["train_seconds"]
    seconds, epoch = metrics["run_seconds"], metrics["epoch_seconds"]
    training = float((summary["split_sizes"]["train"] / metrics["images_per_second"]).sum())
    parts = {
        "before the first epoch (start-up, data)": float(seconds.iloc[0] - epoch.iloc[0]),
        "training": training,
        "validation": float(epoch.sum()) - training,
        "between epochs (checkpoints, logs)": float((seconds.diff() - epoch).iloc[1:].sum()),
        "after the last epoch (test, figures, exit)": total - float(seconds.iloc[-1]),
    }
    shares = ", ".join(
        f"{name} {value:,.1f} s ({value / total:.0%})" for name, value in parts.items()
    )
    return f"time: {shares}"


def speed_line(metrics: pd.DataFrame, model: dict) -> str:
    """Training images/s (median over epochs), the model's training FLOPs per image, and the
    share of this machine's matmul GFLOP/s that the two make. Under progressive resizing each
    epoch's images are counted at the size it trained at (metrics.csv's train_image_size)."""
    sizes = metrics.get("train_image_size", pd.Series(model["image_size"], index=metrics.index))
    flops = {
        int(size): training_flops_per_image({**model, "image_size": int(size)})
        for size in sizes.unique()
    }
    rate = float(metrics["images_per_second"].median())
    achieved = float((metrics["images_per_second"] * sizes.astype(int).map(flops)).median()) / 1e9
    peak = matmul_gflops()
    counted = " / ".join(f"{flops[size] / 1e6:,.1f}" for size in sorted(flops))
    at_sizes = f" at {' / '.join(f'{size} px' for size in sorted(flops))}" if len(flops) > 1 else ""
    return (
        f"train: {rate:,.0f} images/s x {counted} MFLOP per image{at_sizes} (forward + backward) "
        f"= {achieved:.2f} GFLOP/s; matmul here: {peak:.1f} GFLOP/s (fp32, "
        f"{torch.get_num_threads()} threads) -> {achieved / peak:.0%} of it"
    )


def training_flops_per_image(model: dict) -> float:
    """Forward and backward FLOPs of one image, counted by torch's FlopCounterMode. Counted on
    the unfused attention (the same arithmetic): the counter does not see the fused CPU kernel."""
    from torch.utils.flop_counter import FlopCounterMode

    vit = VisionTransformer(**{**model, "fused_attention": False})
    image = torch.zeros(1, model["in_chans"], model["image_size"], model["image_size"])
    with FlopCounterMode(display=False) as counter:
        vit(image).sum().backward()
    return float(counter.get_total_flops())


def matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """fp32 GFLOP/s of a size x size matrix product: the median of ``repeats``, after a warm-up."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(seconds) / 1e9


if __name__ == "__main__":
    sys.exit(main())
