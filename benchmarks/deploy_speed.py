"""Serving on a CPU: onnxruntime against PyTorch eager and compiled, side by side in one run.

    python benchmarks/deploy_speed.py                          # the default model, ViT-Tiny/4 @ 32
    python benchmarks/deploy_speed.py --run outputs/DATE/TIME  # a saved run's model
    python benchmarks/deploy_speed.py --shapes tiny32 --batch-size 64 --repeats 7

For each model it prints the single-image latency (ms per call with one image) and the batch
throughput (images/s at --batch-size) of onnxruntime running the model's ONNX export (made as
`inference.py --export-onnx` makes it), of PyTorch eager, and of ``torch.compile`` (a static graph
per batch size), with each one's speed-up over eager. All three get the same weights and inputs,
in fp32 on the CPU; times are medians of --repeats timed blocks after two warm-up blocks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from input_pipeline import compose_config  # noqa: E402
from model_speed import SHAPES, median_seconds  # noqa: E402

from deploy.predictor import open_session  # noqa: E402
from src.data import load_dataset  # noqa: E402
from src.model.build import build_model  # noqa: E402
from src.model.vit import VisionTransformer  # noqa: E402
from src.predict.onnx_export import onnx_program  # noqa: E402
from src.runs.catalogue import choose_run, load_model  # noqa: E402
from src.training.device import configure_backend  # noqa: E402

CPU = torch.device("cpu")


def shape_model(shape: str) -> tuple[VisionTransformer, dict]:
    """A freshly initialised model of a named shape (speed does not depend on the weights);
    digits16 is the default run's (model=vit_digits on the embedded digits: 16 px grey)."""
    torch.manual_seed(0)
    if shape == "digits16":
        cfg = compose_config([])
        data = load_dataset(cfg.dataset)
        model = build_model(cfg.model, data.channels, len(data.class_names)).eval()
        return model, {"channels": data.channels, "image_size": cfg.model.image_size}
    size, patch, dim, depth, heads = SHAPES[shape][:5]
    model = VisionTransformer(
        image_size=size,
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        num_classes=1000,
    ).eval()
    return model, {"channels": 3, "image_size": size}


def runners(
    model: torch.nn.Module, card: dict, folder: Path
) -> dict[str, Callable[[torch.Tensor], np.ndarray]]:
    """name -> a function from a batch to its logits."""
    path = folder / "model.onnx"
    onnx_program(model, card).save(str(path), external_data=False)
    session = open_session(path)
    compiled = torch.compile(model, dynamic=False)

    @torch.no_grad()
    def eager(x: torch.Tensor) -> np.ndarray:
        return model(x).numpy()

    @torch.no_grad()
    def compiled_run(x: torch.Tensor) -> np.ndarray:
        return compiled(x).numpy()

    return {
        "onnxruntime": lambda x: session.run(None, {"images": x.numpy()})[0],
        "eager": eager,
        "compiled": compiled_run,
    }


def measure(name: str, model: torch.nn.Module, card: dict, args: argparse.Namespace) -> None:
    size, channels = card["image_size"], card["channels"]
    with tempfile.TemporaryDirectory() as folder:
        run = runners(model, card, Path(folder))
        batch = torch.randn(
            args.batch_size, channels, size, size, generator=torch.Generator().manual_seed(0)
        )
        one = batch[:1]
        reference = run["eager"](batch)
        latency, throughput, difference = {}, {}, {}
        for kind, call in run.items():
            difference[kind] = float(np.abs(call(batch) - reference).max())
            latency[kind] = (
                median_seconds(lambda call=call: call(one), CPU, args.steps, args.repeats) * 1e3
            )
            throughput[kind] = args.batch_size / median_seconds(
                lambda call=call: call(batch), CPU, args.steps, args.repeats
            )
    params = sum(p.numel() for p in model.parameters()) / 1e6
    label = f"{name} ({params:.2f}M)"
    print(
        f"{label:<22} {'latency ms, batch 1':<26}"
        + "".join(f"{latency[k]:>12.2f}" for k in run)
        + f"{latency['eager'] / latency['onnxruntime']:>13.2f}x"
        + f"{latency['eager'] / latency['compiled']:>9.2f}x"
    )
    print(
        f"{'':<22} {f'throughput img/s, batch {args.batch_size}':<26}"
        + "".join(f"{throughput[k]:>12,.0f}" for k in run)
        + f"{throughput['onnxruntime'] / throughput['eager']:>13.2f}x"
        + f"{throughput['compiled'] / throughput['eager']:>9.2f}x"
    )
    print(
        f"{'':<22} {'max |logits - eager|':<26}" + "".join(f"{difference[k]:>12.1e}" for k in run)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", help="a saved run folder (or latest/best): measure its model")
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=None,
        choices=["digits16", *SHAPES],
        help="model shapes, freshly initialised (default: digits16 tiny32)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="the batch of the throughput (default 64)"
    )
    parser.add_argument("--steps", type=int, default=10, help="calls per timed block")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed blocks; the median is printed"
    )
    args = parser.parse_args()

    import onnxruntime

    configure_backend(CPU)
    print(
        f"CPU, torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
        f"{onnxruntime.__version__} (default threads), fp32"
    )
    print(
        f"medians of {args.repeats} blocks of {args.steps} calls; "
        "speed-up: eager's time / the other's"
    )
    print(
        f"{'model':<22} {'':<26}{'onnxruntime':>12}{'eager':>12}{'compiled':>12}"
        f"{'speed-up ort':>14}{'compiled':>10}"
    )
    if args.run:
        run = choose_run(args.run)
        measure(run.path.name, load_model(run), run.card, args)
    for shape in args.shapes or ([] if args.run else ["digits16", "tiny32"]):
        model, card = shape_model(shape)
        measure(shape, model, card, args)


if __name__ == "__main__":
    main()
