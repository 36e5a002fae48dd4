"""The speed benchmarks run and print their numbers (the numbers themselves: docs/results.md)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.test_datasets import write_image

pytest.importorskip("timm", reason="model_speed.py compares against timm (requirements-test.txt)")


def run(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_model_speed_prints_ours_timm_and_the_ratio():
    out = run(
        "benchmarks/model_speed.py",
        "--shapes",
        "tiny32",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--repeats",
        "1",
        "--device",
        "cpu",
    )
    [row] = [line for line in out.splitlines() if line.startswith("tiny32")]
    numbers = [float(n.replace(",", "")) for n in row.split()[1:]]
    assert len(numbers) == 9 and all(n > 0 for n in numbers)
    # The training ratio, from the unrounded rates: the printed ones (to 0.1) bound it.
    ours, timm, ratio = numbers[1], numbers[2], numbers[3]
    assert (ours - 0.05) / (timm + 0.05) - 0.005 <= ratio <= (ours + 0.05) / (timm - 0.05) + 0.005


@pytest.mark.slow
def test_compiled_model_speed_compiles_each_shape_with_fixed_sizes(monkeypatch):
    """After one shape, compiling the same forward at another size would make batch and image
    size symbolic (slower kernels than train.py's one-shape compile): each shape starts afresh."""
    torch = pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import model_speed

    symbolic = []

    def recording_backend(graph_module, example_inputs):
        sizes = [
            d
            for node in graph_module.graph.nodes
            if node.op == "placeholder"
            for value in [node.meta.get("example_value")]
            if isinstance(value, torch.Tensor)
            for d in value.shape
        ]
        symbolic.append(any(isinstance(d, torch.SymInt) for d in sizes))
        return graph_module.forward  # run the traced graph as it is: no inductor, fast

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model: compile_(model, backend=recording_backend))
    cpu = torch.device("cpu")
    for shape in ("tiny32", "small224"):
        ours, _ = model_speed.build(shape, cpu, depth=1)
        model_speed.measure(ours, shape, cpu, None, compiled=True, batch=2, steps=1, repeats=1)
    torch._dynamo.reset()  # no graph of this backend is left for the tests after this one
    assert len(symbolic) == 6 and not any(symbolic)


@pytest.mark.slow
def test_epoch_time_compares_our_pipeline_with_torchvision(tmp_path):
    for split, count in (("train", 12), ("test", 4)):  # CIFAR-sized: 32x32 colour JPEGs
        for name in ("cat", "dog"):
            for i in range(count):
                write_image(tmp_path / "cifar" / split / name / f"{i}.jpg", "RGB", (32, 32), seed=i)
    out = run(
        "benchmarks/epoch_time.py",
        "--folder",
        str(tmp_path / "cifar"),
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "model=vit_digits",
    )
    rates = re.findall(
        r"^(ours \(in memory\)|torchvision \(0 workers\)) .* = ([\d,]+) images/s$", out, re.M
    )
    assert [name for name, _ in rates] == ["ours (in memory)", "torchvision (0 workers)"]


@pytest.mark.slow
def test_deploy_speed_prints_onnxruntime_eager_and_compiled_side_by_side():
    pytest.importorskip(
        "onnxruntime", reason="deploy_speed.py runs the ONNX export (requirements-export.txt)"
    )
    out = run(
        "benchmarks/deploy_speed.py",
        "--shapes",
        "digits16",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--repeats",
        "1",
    )
    lines = out.splitlines()
    latency, throughput, difference = [lines[i] for i in range(3, 6)]
    assert latency.startswith("digits16 (0.14M)") and "latency ms, batch 1" in latency
    assert "throughput img/s, batch 2" in throughput
    for row in (latency, throughput):  # three measurements, then two speed-ups over eager
        numbers = re.findall(r"([\d,]+\.?\d*)(x?)(?=\s|$)", row.split("batch ")[1])[1:]
        assert len(numbers) == 5 and [x for _, x in numbers] == ["", "", "", "x", "x"], row
        # (a shared machine can stall a call for seconds: a rate may print as 0 at this tiny size)
        assert all(float(n.replace(",", "")) >= 0 for n, _ in numbers), row
    assert all(float(d) < 1e-4 for d in difference.split()[-3:])  # the same logits from all three
