"""What will this machine do? Answers in seconds, before any training.

    python -m src.training.gpu_check                # or: make check-gpu
    python -m src.training.gpu_check --json         # the same, as one JSON object
    python -m src.training.gpu_check --no-compile   # skip the torch.compile trial
    python -m src.training.gpu_check --json-file F  # the lines, and the JSON object into file F

It reports torch and CUDA versions, the GPUs, native bf16, whether torch.compile works on a tiny
ViT, whether NCCL is there, and what trainer.device=auto and trainer.precision=auto will pick:
the answer comes from the same functions train.py calls. It imports no Hydra, so it also runs
where only torch is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from pathlib import Path

import torch
import torch.distributed as dist

from src.model.vit import VisionTransformer
from src.training.device import native_bf16, resolve_device, resolve_precision


def gpus() -> list[dict]:
    found = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        found.append(
            {
                "index": index,
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}",
            }
        )
    return found


def bf16_support() -> dict:
    """Native bf16 (what precision=auto needs) and, apart, whether torch would emulate it."""
    if not torch.cuda.is_available():
        return {"native": None, "emulated": None}
    native = native_bf16()
    return {"native": native, "emulated": not native and torch.cuda.is_bf16_supported()}


def nccl() -> dict:
    available = dist.is_available() and dist.is_nccl_available()
    version = None
    if available and torch.cuda.is_available():
        # RuntimeError, AttributeError: a build without the NCCL library loaded
        with contextlib.suppress(RuntimeError, AttributeError):
            version = ".".join(map(str, torch.cuda.nccl.version()))
    return {"available": available, "version": version}


def try_compile(device: torch.device, precision: torch.dtype | None) -> dict:
    """Compile a one-block ViT and take one training step with it, as trainer.compile=true would."""
    torch._dynamo.reset()  # a fresh compile, not a cached one
    model = VisionTransformer(
        image_size=8, patch_size=4, in_chans=1, num_classes=2, embed_dim=32, depth=1, num_heads=2
    ).to(device)
    net = torch.compile(model)
    images = torch.randn(4, 1, 8, 8, device=device)
    started = time.perf_counter()
    try:
        with torch.autocast(device.type, dtype=precision, enabled=precision is not None):
            loss = net(images).float().logsumexp(dim=1).mean()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as err:  # any backend failure (no compiler, no Triton, ...) is the answer
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return {
            "works": False,
            "seconds": round(time.perf_counter() - started, 1),
            "error": f"{type(err).__name__}: {first_line}"[:300],
        }
    return {"works": True, "seconds": round(time.perf_counter() - started, 1), "error": None}


def check(compile_trial: bool = True) -> dict:
    device = resolve_device("auto")
    precision = resolve_precision("auto", device)
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,  # None for a CPU-only build of torch
        "cuda_available": torch.cuda.is_available(),
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "gpus": gpus(),
        "bf16": bf16_support(),
        "compile": try_compile(device, precision) if compile_trial else None,
        "nccl": nccl(),
        "cpu_threads": torch.get_num_threads(),
        "auto_device": str(device),
        "auto_precision": "bf16" if precision == torch.bfloat16 else "fp32",
    }


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "n/a (no GPU)"}[value]


def format_report(facts: dict) -> str:
    cuda = f"CUDA {facts['cuda_build']} build" if facts["cuda_build"] else "CPU-only build"
    lines = [f"torch                    {facts['torch']} ({cuda}, Python {facts['python']})"]
    if facts["gpus"]:
        for gpu in facts["gpus"]:
            lines.append(
                f"GPU {gpu['index']}                    {gpu['name']}, {gpu['memory_gib']} GiB, "
                f"compute capability {gpu['capability']}"
            )
        lines.append(f"cuDNN                    {facts['cudnn']}")
    else:
        lines.append(
            f"GPU                      none visible to torch (CPU: {facts['cpu_threads']} threads)"
        )
    bf16 = facts["bf16"]
    native = _yes_no(bf16["native"])
    if bf16["emulated"]:
        native += " (emulated only: slower than fp32, so precision=auto keeps fp32)"
    lines.append(f"bf16 (native)            {native}")
    trial = facts["compile"]
    if trial is None:
        lines.append("torch.compile            not tried (--no-compile)")
    elif trial["works"]:
        lines.append(
            f"torch.compile            works (tiny ViT, one training step, {trial['seconds']} s)"
        )
    else:
        lines.append(
            f"torch.compile            fails: {trial['error']}; train with trainer.compile=false"
        )
    nccl_line = _yes_no(facts["nccl"]["available"])
    if facts["nccl"]["version"]:
        nccl_line += f" (version {facts['nccl']['version']})"
    elif facts["nccl"]["available"] and not facts["gpus"]:
        nccl_line += " (built into torch; it needs GPUs, so torchrun here uses gloo)"
    lines.append(f"NCCL                     {nccl_line}")
    lines.append(f"trainer.device=auto      -> {facts['auto_device']}")
    lines.append(f"trainer.precision=auto   -> {facts['auto_precision']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of lines"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile trial")
    parser.add_argument("--json-file", type=Path, help="also write the JSON object into this file")
    args = parser.parse_args(argv)
    facts = check(compile_trial=not args.no_compile)
    print(json.dumps(facts, indent=2) if args.json else format_report(facts))
    if args.json_file:
        args.json_file.parent.mkdir(parents=True, exist_ok=True)
        args.json_file.write_text(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
