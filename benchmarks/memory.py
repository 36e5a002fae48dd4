"""Peak resident memory of an image folder's input pipeline, against the size of its data.

    python benchmarks/memory.py --folder /tmp/cifar10-jpeg                 # 32 px: memory, stream
    python benchmarks/memory.py --folder /tmp/cifar10-jpeg --image-size 224 --modes stream

Each measurement runs in a fresh Python process, which loads the folder (dataset=folder) with
dataset.loader set to the mode and takes --batches training batches from it (crop + flip, on the
CPU). It prints the process's peak resident memory (ru_maxrss), what it held before loading (the
imports, resident then), the largest decoding worker's peak, and the size of the data decoded as
uint8 images (N x C x S x S). Modes:
  memory-decode   held in memory, decoded from the files into a fresh cache
  memory-cached   held in memory, read from that cache (the second run)
  stream          decoded by DataLoader workers as the batches are taken
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("memory-decode", "memory-cached", "stream")


def peak_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kilobytes on Linux


def resident_mb() -> float:
    """Resident memory now (the peak can be higher: importing torch passes through a peak)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(args: argparse.Namespace) -> dict:
    """One mode, in this process (started by ``main``)."""
    sys.path.insert(0, str(ROOT))
    import torch
    from hydra import compose, initialize_config_dir

    from src.data import BatchAugment, load_dataset, make_batches

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "dataset=folder",
                f"dataset.root={args.folder}",
                f"model.image_size={args.image_size}",
                f"dataset.loader={args.mode.split('-')[0]}",
                f"dataset.cache_dir={args.cache_dir}",
                f"trainer.num_workers={args.workers}",
            ],
        )
    before = resident_mb()
    start = time.perf_counter()
    data = load_dataset(cfg.dataset)
    loader = make_batches(
        data.train,
        args.batch_size,
        num_workers=args.workers,
        image_size=args.image_size,
        mean=data.mean,
        std=data.std,
        device=torch.device("cpu"),
        shuffle=True,
        augment=BatchAugment(crop_padding=args.image_size // 8, horizontal_flip=True),
    )
    for step, _ in enumerate(loader, 1):
        if step == args.batches:
            break
    del loader  # its worker processes end, so their peak is counted
    images = len(data.train) + len(data.val) + len(data.test)
    return {
        "peak_mb": peak_mb(),
        "before_mb": before,
        "workers_mb": peak_mb(resource.RUSAGE_CHILDREN),
        "data_mb": images * data.channels * args.image_size**2 / 2**20,
        "images": images,
        "seconds": time.perf_counter() - start,
    }


def run_child(args: argparse.Namespace, mode: str, cache_dir: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--mode",
        mode,
        "--folder",
        str(args.folder),
        "--image-size",
        str(args.image_size),
        "--batches",
        str(args.batches),
        "--batch-size",
        str(args.batch_size),
        "--workers",
        str(args.workers),
        "--cache-dir",
        cache_dir,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{mode} failed:\n{out.stderr}")
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--folder", type=Path, required=True, help="an image folder, e.g. the CIFAR-10 JPEGs"
    )
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--batches", type=int, default=50, help="training batches taken after loading"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return

    with tempfile.TemporaryDirectory() as cache_dir:  # a fresh cache: the first load decodes
        results = {mode: run_child(args, mode, cache_dir) for mode in args.modes}
    first = next(iter(results.values()))
    print(
        f"{args.folder}: {first['images']:,} images at {args.image_size}x{args.image_size}, "
        f"{args.batches} batches of {args.batch_size}, {args.workers} workers"
    )
    for mode, r in results.items():
        print(
            f"{mode:14} peak RSS {r['peak_mb']:7,.0f} MB for {r['data_mb']:6,.0f} MB of data "
            f"({r['peak_mb'] - r['before_mb']:+7,.0f} MB over the {r['before_mb']:,.0f} MB of "
            f"imports; largest worker {r['workers_mb']:,.0f} MB; {r['seconds']:.1f} s)"
        )


if __name__ == "__main__":
    main()
