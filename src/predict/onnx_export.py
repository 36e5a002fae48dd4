"""A run folder -> model.onnx beside its model.json, for onnxruntime and the torch-free predictor
in deploy/ (docs: guide/predicting.md#deploying-without-pytorch).

The model is exported with the exporter torch recommends, ``torch.onnx.export(dynamo=True)``
(torch.export, then onnxscript's translation), at torch's default opset, with a dynamic batch
size. model.onnx's metadata records the fingerprints of model.json and the weights, so a
predictor can tell when the export no longer matches its run. Before the file takes its place,
onnxruntime runs it on random inputs and must give PyTorch's logits.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from deploy.exported import ONNX_FILE, fingerprints
from deploy.predictor import open_session
from src.errors import ConfigError
from src.fileio import atomic_write
from src.model.views import card_test_views
from src.runs.catalogue import Run, load_model

TOLERANCE = 1e-4  # largest difference allowed between onnxruntime's logits and PyTorch's
CHECK_BATCHES = (1, 3)  # neither is the example batch's size: the check proves the batch dynamic


def export_onnx(run: Run, log: Callable[[str], None] = print) -> Path:
    """Write ``run``'s model.onnx (replacing an older one) and return its path."""
    missing = [
        name
        for name in ("onnx", "onnxscript", "onnxruntime")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ConfigError(
            f"--export-onnx needs {', '.join(missing)}; install them with "
            "`pip install -r requirements-export.txt`."
        )
    target = run.path / ONNX_FILE
    model = card_test_views(load_model(run), run.card)  # the final test's views, in the graph
    log(f"exporting {run.path} with torch.onnx.export(dynamo=True), torch {torch.__version__} ...")
    start = time.perf_counter()
    program = onnx_program(model, run.card)
    program.model.metadata_props.update(fingerprints(run.path))

    def save_and_check(tmp: Path) -> None:
        program.save(str(tmp), external_data=False)  # one file, weights inside
        difference = largest_difference(model, tmp, run.card)
        log(
            f"checked: onnxruntime's logits are PyTorch's within {difference:.1e} "
            f"(batches of {' and '.join(map(str, CHECK_BATCHES))}, random inputs)"
        )

    atomic_write(target, save_and_check)
    opset = program.model.opset_imports[""]
    log(
        f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB, opset {opset}, dynamic batch) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return target


def onnx_program(model: torch.nn.Module, card: dict) -> torch.onnx.ONNXProgram:
    # torch.export treats an example size of 0 or 1 as a constant, so the example batch is 2.
    example = torch.zeros(2, card["channels"], card["image_size"], card["image_size"])
    return torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )


def largest_difference(model: torch.nn.Module, onnx_path: Path, card: dict) -> float:
    """The largest |onnxruntime - PyTorch| over the logits of random inputs; raises above
    ``TOLERANCE``, so a wrong export never takes the place of a file."""
    session = open_session(onnx_path)
    generator = torch.Generator().manual_seed(0)
    largest = 0.0
    for batch in CHECK_BATCHES:
        x = torch.randn(
            batch, card["channels"], card["image_size"], card["image_size"], generator=generator
        )
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        largest = max(largest, float(np.abs(got - expected).max()))
    if largest > TOLERANCE:
        raise RuntimeError(
            f"the ONNX export's logits differ from PyTorch's by {largest:.1e} "
            f"(over {TOLERANCE:g}); it was not written."
        )
    return largest
