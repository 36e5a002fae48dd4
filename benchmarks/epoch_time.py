"""One training epoch on CIFAR-10 (the JPEG copy): our input pipeline against a plain torchvision
DataLoader with PIL transforms, feeding the same model through the same training loop.

    mkdir -p /tmp/cifar10-jpeg && tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/cifar10-jpeg
    python benchmarks/epoch_time.py --folder /tmp/cifar10-jpeg [--device cuda] [--workers 8]

ours:        images decoded once (cached as uint8), held on the device, batched by indexing,
             cropped/flipped/normalised as whole batches there.
torchvision: ImageFolder + RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize
             in DataLoader workers (pinned memory, persistent workers), then copied to the device.
Both train the model named by the overrides (default: ViT-Tiny width at 32 px with 4 px patches)
for --steps steps (default: a whole epoch) and print seconds per epoch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from src.data import BatchAugment, load_dataset, make_batches, worker_count  # noqa: E402
from src.model.build import build_model  # noqa: E402
from src.training.device import configure_backend, resolve_device, resolve_precision
from src.training.loops import train_one_epoch  # noqa: E402
from src.training.optim import build_optimizer  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class Limited:
    """At most ``steps`` batches of ``batches``, moved to ``device``."""

    def __init__(self, batches, steps: int, device: torch.device):
        self.batches, self.steps, self.device = batches, steps, device

    def __iter__(self):
        for step, (x, y) in enumerate(self.batches):
            if step == self.steps:
                return
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def torchvision_batches(folder: Path, batch_size: int, workers: int, mean, std, device):
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    dataset = datasets.ImageFolder(str(folder / "train"), transform=transform)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=False,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model=vit_small")
    parser.add_argument(
        "--folder", type=Path, required=True, help="the unpacked CIFAR-10 JPEG copy"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--workers", default="auto", help="DataLoader workers for the torchvision pipeline"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per timed epoch (default: all)"
    )
    return parser.parse_args()


def compose_config(args: argparse.Namespace):
    overrides = [
        "model=vit_tiny",
        "model.image_size=32",
        "model.patch_size=4",
        "dataset=folder",
        f"dataset.root={args.folder}",
        "dataset.loader=memory",
        *args.overrides,
    ]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def pipelines(args: argparse.Namespace, data, workers: int, device: torch.device) -> dict:
    """The two input pipelines by name: ours, in memory, and torchvision's in workers."""
    return {
        "ours (in memory)": make_batches(
            data.train,
            args.batch_size,
            image_size=32,
            mean=data.mean,
            std=data.std,
            device=device,
            shuffle=True,
            augment=BatchAugment(crop_padding=4, horizontal_flip=True),
            seed=0,
        ),
        f"torchvision ({workers} workers)": torchvision_batches(
            args.folder, args.batch_size, workers, data.mean, data.std, device
        ),
    }


def time_epoch(cfg, data, batches, steps: int, device: torch.device, precision):
    """Trains a fresh model for ``steps`` batches, after 2 untimed ones; (seconds, images)."""
    torch.manual_seed(0)
    model = build_model(cfg.model, data.channels, len(data.class_names)).to(device)
    optimizer = build_optimizer(instantiate(cfg.optimizer), model, device)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    limited = Limited(batches, steps, device)
    train_one_epoch(model, Limited(batches, 2, device), optimizer, scheduler, device, precision)
    start = time.perf_counter()
    stats = train_one_epoch(model, limited, optimizer, scheduler, device, precision, grad_clip=1.0)
    return time.perf_counter() - start, stats.images


def main() -> None:
    args = parse_args()
    cfg = compose_config(args)
    device = resolve_device(args.device, "--device ")
    precision = resolve_precision(args.precision, device)
    configure_backend(device)
    workers = worker_count(args.workers if args.workers == "auto" else int(args.workers))
    data = load_dataset(cfg.dataset)  # decoded once and cached; its train split is 90% of train/

    timed = pipelines(args, data, workers, device)
    steps = args.steps or len(timed["ours (in memory)"])
    print(
        f"device {device}, precision {precision or 'fp32'}, batch {args.batch_size}, {steps} steps "
        f"an epoch, model {cfg.model.name} {cfg.model.image_size}px/{cfg.model.patch_size}"
    )
    for name, batches in timed.items():
        seconds, images = time_epoch(cfg, data, batches, steps, device, precision)
        print(
            f"{name:<24} {seconds:8.1f} s for {images:,} images = {images / seconds:,.0f} images/s"
        )


if __name__ == "__main__":
    main()
