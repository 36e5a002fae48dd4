"""Our ViT against timm's VisionTransformer of the same shape, on one device, in one run.

    python benchmarks/model_speed.py                    # CPU: tiny/4 @ 32, small/16 @ 224
    python benchmarks/model_speed.py --device cuda --precision bf16 --shapes tiny32 small224 base224
    python benchmarks/model_speed.py --device cuda --precision bf16 --compile

For each shape it prints training throughput (forward, backward, AdamW step), inference throughput
and single-image latency of both models, and ours / timm. Both get the same weights, precision
(autocast), compile setting, batch and inputs; times are medians of --repeats timed blocks after
warm-up. On a GPU it also prints the model FLOP utilisation of training against --peak-tflops.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.model.vit import VisionTransformer  # noqa: E402
from src.training.device import (  # noqa: E402
    autocast,
    configure_backend,
    resolve_device,
    resolve_precision,
)

# name: (image size, patch, width, depth, heads, training batch on CPU, on GPU)
SHAPES = {
    "tiny32": (32, 4, 192, 12, 3, 64, 512),
    "small224": (224, 16, 384, 12, 6, 8, 256),
    "base224": (224, 16, 768, 12, 12, 4, 256),
}


def build(
    shape: str, device: torch.device, depth: int | None = None
) -> tuple[torch.nn.Module, torch.nn.Module]:
    import timm.models.vision_transformer as timm_vit

    size, patch, dim, shape_depth, heads = SHAPES[shape][:5]
    depth = depth or shape_depth
    torch.manual_seed(0)
    reference = timm_vit.VisionTransformer(
        img_size=size,
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        num_classes=1000,
    )
    ours = VisionTransformer(
        image_size=size,
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        num_classes=1000,
        drop_path_rate=0.0,
    )
    ours.load_state_dict(reference.state_dict())
    return ours.to(device), reference.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(step: Callable[[], None], device, steps: int, repeats: int) -> float:
    """Median over ``repeats`` blocks of the time per call, after two warm-up blocks."""
    times = []
    for block in range(repeats + 2):
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        if block >= 2:
            times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def measure(model, shape, device, precision, compiled, batch, steps, repeats) -> dict[str, float]:
    size = SHAPES[shape][0]
    if compiled:
        # Forget the graphs of the shape before: compiling the same forward at a new size would
        # otherwise make batch and image size symbolic, which is not what one train.py run compiles.
        torch._dynamo.reset()
    net = torch.compile(model) if compiled else model
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def train_step() -> None:
        with autocast(device, precision):
            loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    train = median_seconds(train_step, device, steps, repeats)
    model.eval()
    one = x[:1]

    @torch.no_grad()
    def infer(inputs) -> Callable[[], None]:
        def run() -> None:
            with autocast(device, precision):
                net(inputs)

        return run

    infer_batch = median_seconds(infer(x), device, steps, repeats)
    latency = median_seconds(infer(one), device, steps, repeats)
    return {"train": batch / train, "infer": batch / infer_batch, "latency_ms": latency * 1e3}


def training_flops(model: VisionTransformer, batch: int) -> float:
    """Matmul FLOPs of one training step (forward x 3), from the model's shapes."""
    tokens = model.patch_embed.num_patches + 1
    dim = model.embed_dim
    per_block = 2 * tokens * (4 * dim * dim + 2 * dim * 4 * dim) + 2 * 2 * tokens * tokens * dim
    patch = 2 * model.patch_embed.num_patches * dim * model.patch_embed.proj.weight[0].numel()
    return 3 * batch * (len(model.blocks) * per_block + patch)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (autocast)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--shapes", nargs="+", default=None, choices=list(SHAPES))
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: per shape and device"
    )
    parser.add_argument(
        "--depth",
        type=int,
        default=None,
        help="blocks (default: the shape's 12); fewer for a quick check",
    )
    parser.add_argument("--steps", type=int, default=3, help="calls per timed block")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed blocks; the median is printed"
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)"
    )
    return parser.parse_args()


def print_header(device: torch.device, precision, compiled: bool) -> None:
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"device: {name} | precision: {precision or 'fp32'} | compile: {compiled} | "
        f"torch {torch.__version__}"
    )
    header = (
        f"{'shape':<9} {'batch':>5}  {'train img/s ours':>16} {'timm':>8} {'ratio':>6}  "
        f"{'infer img/s ours':>16} {'timm':>8} {'ratio':>6}  {'latency ms ours':>15} {'timm':>7}"
    )
    print(header)


def print_row(shape: str, batch: int, a: dict[str, float], b: dict[str, float]) -> None:
    """One shape's figures, ours (``a``) and timm's (``b``), and ours / timm."""
    print(
        f"{shape:<9} {batch:>5}  "
        f"{a['train']:>16,.1f} {b['train']:>8,.1f} {a['train'] / b['train']:>6.2f}  "
        f"{a['infer']:>16,.1f} {b['infer']:>8,.1f} {a['infer'] / b['infer']:>6.2f}  "
        f"{a['latency_ms']:>15.2f} {b['latency_ms']:>7.2f}"
    )


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device, "--device ")
    precision = resolve_precision(args.precision, device)
    configure_backend(device)
    shapes = args.shapes or (["tiny32", "small224"] if device.type == "cpu" else list(SHAPES))
    print_header(device, precision, args.compile)
    for shape in shapes:
        batch = args.batch_size or SHAPES[shape][5 if device.type == "cpu" else 6]
        ours, reference = build(shape, device, args.depth)
        a = measure(ours, shape, device, precision, args.compile, batch, args.steps, args.repeats)
        b = measure(
            reference, shape, device, precision, args.compile, batch, args.steps, args.repeats
        )
        print_row(shape, batch, a, b)
        if device.type == "cuda":
            achieved = training_flops(ours, batch) * a["train"] / batch / 1e12
            print(
                f"          model FLOP utilisation (ours, training): {achieved:.0f} TFLOP/s = "
                f"{achieved / args.peak_tflops:.1%} of {args.peak_tflops:.0f}"
            )


if __name__ == "__main__":
    main()
