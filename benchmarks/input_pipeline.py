"""Does the input pipeline keep up with the model? Images per second of each, on one device.

    python benchmarks/input_pipeline.py                                # CIFAR-10-sized random data
    python benchmarks/input_pipeline.py --folder /tmp/cifar10-jpeg     # real JPEGs: + the stream
    python benchmarks/input_pipeline.py --device cuda model=vit_small  # any model overrides

It times, on the same device and batch size:
  memory     uint8 images held on the device -> batch -> random crop + flip -> normalise
  recipe     the same + the CIFAR recipe's RandAugment (2 ops, magnitude 9), random erasing and
             Mixup/CutMix, per image on whole batches (configs/experiment/cifar10.yaml)
  per-image  the same augmentations the usual way, for comparison: torchvision's v2 transforms
             on one image at a time in DataLoader workers, then v2.MixUp/CutMix on the batch
  stream     JPEG files -> DataLoader workers (decode, resize) -> device -> crop + flip -> normalise
  model      one training step of the ViT (forward, backward, AdamW), on ready batches
and prints the median images/s of each, and how many times faster than the model the input is.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from src.data import (  # noqa: E402
    BatchAugment,
    Dataset,
    MixBatch,
    Split,
    channel_stats,
    load_dataset,
    make_batches,
    worker_count,
)
from src.model.build import build_model  # noqa: E402
from src.training.device import configure_backend, resolve_device, resolve_precision
from src.training.loops import train_one_epoch  # noqa: E402
from src.training.optim import build_optimizer  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CIFAR_SHAPE = (50_000, 3, 32, 32)  # CIFAR-10's training set


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model=vit_small")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--folder", type=Path, help="an image folder (e.g. the CIFAR-10 JPEG copy) to stream"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader workers (default: one per core, up to 8)",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed passes; the median is reported"
    )
    parser.add_argument("--model-steps", type=int, default=20, help="training steps per timed pass")
    parser.add_argument(
        "--images", type=int, default=CIFAR_SHAPE[0], help="size of the random dataset"
    )
    return parser.parse_args()


def config_overrides(args: argparse.Namespace) -> list[str]:
    """A CIFAR-sized ViT unless the overrides say otherwise: 32 px, 4 px patches, ViT-Tiny width."""
    overrides = ["model=vit_tiny", "model.image_size=32", "model.patch_size=4", *args.overrides]
    if args.folder:
        overrides += ["dataset=folder", f"dataset.root={args.folder}", "dataset.loader=memory"]
    if args.workers is not None:
        overrides.append(f"trainer.num_workers={args.workers}")
    return overrides


def main() -> None:
    args = parse_args()
    overrides = config_overrides(args)
    cfg = compose_config(overrides)

    device = resolve_device(args.device, "--device ")
    precision = resolve_precision(args.precision, device)
    configure_backend(device)
    data = load_dataset(cfg.dataset) if args.folder else random_cifar_sized(args.images)
    print(
        f"device {device} ({describe(device)}), precision {precision or 'fp32'}, "
        f"batch {args.batch_size}, "
        f"{len(data.train):,} training images {tuple(data.train.images.shape[1:])}, "
        f"model {cfg.model.name} {cfg.model.image_size}px/{cfg.model.patch_size}"
    )

    loader_args = dict(
        image_size=cfg.model.image_size,
        mean=data.mean,
        std=data.std,
        device=device,
        shuffle=True,
        augment=BatchAugment(crop_padding=4, horizontal_flip=True),
        seed=0,
    )
    memory = make_batches(data.train, args.batch_size, **loader_args)
    results = input_rates(args, cfg, data, memory, loader_args)
    if args.folder:
        results.update(stream_rate(args, cfg, overrides, loader_args))
    results["model"] = model_rate(cfg, data, device, precision, memory, args)
    print_rates(results)


def input_rates(args: argparse.Namespace, cfg, data: Dataset, memory, loader_args: dict) -> dict:
    """Images/s of the pipelines on the data in memory: plain, the recipe, and per image."""
    device = loader_args["device"]
    results = {}
    results["memory"] = rate(lambda: consume(memory, device), args.repeats)
    classes = len(data.class_names)
    recipe = make_batches(
        data.train,
        args.batch_size,
        **{**loader_args, "augment": BatchAugment(4, True, 2, 9, 0.25)},
        mix=MixBatch(classes, mixup_alpha=0.8, cutmix_alpha=1.0),
    )
    results["recipe"] = rate(lambda: consume(recipe, device), args.repeats)
    some = min(len(data.train), 10_000)  # the per-image path is slow: time a part of an epoch
    per_image = per_image_loader(data, some, args.batch_size, worker_count(cfg.trainer.num_workers))
    results["per-image (torchvision)"] = rate(
        lambda: consume(per_image, device, MixBatch(classes, 0.8, 1.0)), max(2, args.repeats // 2)
    )
    return results


def stream_rate(args: argparse.Namespace, cfg, overrides: list[str], loader_args: dict) -> dict:
    """Images/s of the JPEG files streamed by DataLoader workers, by the pipeline's name."""
    streamed = load_dataset(compose_config([*overrides, "dataset.loader=stream"]).dataset).train
    workers = worker_count(cfg.trainer.num_workers)
    stream = make_batches(streamed, args.batch_size, num_workers=workers, **loader_args)
    device = loader_args["device"]
    return {
        f"stream ({workers} workers)": rate(
            lambda: consume(stream, device), max(2, args.repeats // 2)
        )
    }


def print_rates(results: dict[str, float]) -> None:
    width = max(map(len, results))
    for name, value in results.items():
        print(f"{name:<{width}}  {value:>12,.0f} images/s")
    for name, value in results.items():
        if name != "model":
            print(f"{name} input / model training: {value / results['model']:.1f}x")
    ratio = results["recipe"] / results["per-image (torchvision)"]
    print(f"recipe input / per-image (torchvision) input: {ratio:.1f}x")


def random_cifar_sized(n: int) -> Dataset:
    """CIFAR-10-sized uint8 data: the pipeline's speed does not depend on the pixel values."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *CIFAR_SHAPE[1:]), dtype=torch.uint8, generator=generator)
    split = Split(images, torch.randint(0, 10, (n,), generator=generator))
    mean, std = channel_stats(images[:1000])
    return Dataset(
        "random-cifar-sized", split, split, split, [str(i) for i in range(10)], mean, std
    )


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def consume(batches, device: torch.device, mix: MixBatch | None = None) -> int:
    """Draws every batch; returns the images drawn (a dropped last partial batch is not counted)."""
    images_drawn = 0
    for images, labels in batches:
        if mix is not None:  # the per-image path mixes after batching, on the device
            images, labels = mix(images.to(device), labels.to(device), torch.Generator())
        images_drawn += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images_drawn


def per_image_loader(data: Dataset, n: int, batch_size: int, workers: int) -> DataLoader:
    """The recipe's augmentations as torchvision's per-image transforms, in DataLoader workers."""
    size = data.train.images.shape[-1]
    augment = v2.Compose(
        [
            v2.RandomCrop(size, padding=4),
            v2.RandomHorizontalFlip(),
            v2.RandAugment(2, 9),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(data.mean, data.std),
            v2.RandomErasing(0.25, value="random"),
        ]
    )
    images, labels = data.train.images[:n], data.train.labels[:n]
    dataset = [(augment, images[i], labels[i]) for i in range(n)]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=_augment_and_collate,
        persistent_workers=workers > 0,
    )


def _augment_and_collate(samples):
    return (
        torch.stack([augment(image) for augment, image, _ in samples]),
        torch.stack([label for _, _, label in samples]),
    )


def rate(run: Callable[[], int], repeats: int) -> float:
    """Median images/s over ``repeats`` timed calls of ``run``, which returns the images it
    handled, after one untimed warm-up (which also starts persistent DataLoader workers)."""
    run()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        images = run()
        rates.append(images / (time.perf_counter() - start))
    return statistics.median(rates)


def model_rate(cfg, data: Dataset, device, precision, memory, args) -> float:
    model = build_model(cfg.model, data.channels, len(data.class_names)).to(device)
    optimizer = build_optimizer(instantiate(cfg.optimizer), model, device)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    ready = []  # batches made beforehand, so only the model is timed
    for batch in memory:
        ready.append(batch)
        if len(ready) == args.model_steps:
            break

    def steps() -> int:
        train_one_epoch(model, ready, optimizer, scheduler, device, precision, grad_clip=1.0)
        return sum(len(y) for _, y in ready)

    return rate(steps, args.repeats)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{torch.get_num_threads()} threads"


if __name__ == "__main__":
    main()
