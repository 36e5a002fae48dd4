"""On a CUDA GPU: bf16 and compiled training, NCCL under torchrun, resume, and the GPU memory of the
in-memory pipeline. Every test here is marked `cuda` and is skipped, with the reason, without a GPU
(tests/conftest.py); benchmarks/gpu_suite.py runs them first on a GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# cuBLAS reads this once, when it starts: deterministic matrix products for the resume test need
# it set before any test touches the GPU. It only sizes cuBLAS's workspace.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

from src.data import BatchAugment, MixBatch, Split, make_batches  # noqa: E402
from src.training.run import train  # noqa: E402
from src.training.stopping import TrainingStopped  # noqa: E402
from tests.conftest import ROOT, TINY_RUN, compose_config  # noqa: E402
from tests.test_resume import FULL_RECIPE, TIMING_COLUMNS, stop_after_epoch  # noqa: E402

pytestmark = pytest.mark.cuda

# No stochastic depth here: compiled code draws its random numbers apart from eager code, and
# the bf16 and compile tests compare runs step by step. The resume test turns it back on.
ON_GPU = TINY_RUN + ["trainer.device=cuda", "trainer.visualize=false", "model.drop_path_rate=0.0"]


def run_on_gpu(run_dir, *overrides: str) -> tuple[dict, pd.DataFrame]:
    train(compose_config(ON_GPU + list(overrides)), run_dir)
    return json.loads((run_dir / "summary.json").read_text()), pd.read_csv(run_dir / "metrics.csv")


@pytest.fixture(scope="module")
def bf16_eager(tmp_path_factory):
    return run_on_gpu(tmp_path_factory.mktemp("bf16"), "trainer.precision=bf16")


def test_a_bf16_training_run_follows_the_fp32_one(bf16_eager, tmp_path):
    summary, metrics = bf16_eager
    assert summary["status"] == "completed" and summary["device"] == "cuda"
    assert summary["precision"] == "bfloat16"
    _, fp32 = run_on_gpu(tmp_path, "trainer.precision=fp32")
    # bf16 keeps 8 bits of mantissa: the losses drift apart a little, the learning is the same.
    assert metrics["train_loss"].tolist() == pytest.approx(fp32["train_loss"].tolist(), rel=0.05)
    assert metrics["val_loss"].tolist() == pytest.approx(fp32["val_loss"].tolist(), rel=0.05)


def test_a_compiled_training_run_follows_the_eager_one(bf16_eager, tmp_path):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    summary, compiled = run_on_gpu(tmp_path, "trainer.precision=bf16", "trainer.compile=true")
    assert summary["status"] == "completed"
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it really was compiled
    _, eager = bf16_eager
    # Compiled kernels fuse and reorder floating-point operations: close, not bit-for-bit.
    assert compiled["train_loss"].tolist() == pytest.approx(eager["train_loss"].tolist(), rel=0.05)
    assert compiled["val_loss"].tolist() == pytest.approx(eager["val_loss"].tolist(), rel=0.05)


@pytest.mark.parametrize("processes", [1, 2])
def test_torchrun_on_gpus_uses_nccl_and_writes_one_run(tmp_path, processes):
    if torch.cuda.device_count() < processes:
        pytest.skip(f"needs {processes} CUDA GPUs; torch sees {torch.cuda.device_count()}")

    def torchrun(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={processes}",
                *args,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    collectives = torchrun("tests/helpers/nccl_collectives.py")
    assert collectives.returncode == 0, collectives.stderr
    assert collectives.stdout.count("NCCL all_reduce, broadcast and barrier agree") == processes

    # One process trains without a process group (nothing to average); two train with DDP on NCCL.
    run = torchrun("train.py", f"hydra.run.dir={tmp_path}/run", *ON_GPU)
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["processes"] == processes
    assert summary["device"] == ("cuda" if processes == 1 else "cuda:0")


def test_a_resumed_gpu_run_is_bit_for_bit_the_uninterrupted_one_with_deterministic_kernels(
    tmp_path, monkeypatch
):
    """Exact as far as CUDA allows. A resume restores everything exactly (weights, optimizer,
    schedule, EMA, the CPU and CUDA random generators, the data order). But CUDA's fastest kernels
    add in an order that varies from run to run: flash attention's backward sums the query
    gradients with atomic adds, and cuDNN and cuBLAS may choose such algorithms too. With them, two
    runs (resumed or not) agree to rounding at first and then drift apart as two seeds would.
    With deterministic algorithms, the math attention kernel and cuBLAS's fixed workspace, the
    resumed run must be bit-for-bit the uninterrupted one, on the same GPU and software."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    torch.use_deterministic_algorithms(True, warn_only=True)
    run = ["trainer.epochs=4", "trainer.precision=bf16", "model.drop_path_rate=0.1", *FULL_RECIPE]
    try:
        with sdpa_kernel(SDPBackend.MATH):
            straight, _ = run_on_gpu(tmp_path / "straight", *run)
            with monkeypatch.context() as patch, pytest.raises(TrainingStopped, match="in epoch 3"):
                stop_after_epoch(patch, 2)
                run_on_gpu(tmp_path / "stopped", *run)
            resumed, _ = run_on_gpu(tmp_path / "stopped", *run, f"resume={tmp_path / 'stopped'}")
    finally:
        torch.use_deterministic_algorithms(False)

    assert resumed["resumes"][0]["from_epoch"] == 2
    a, b = (
        load_file(tmp_path / "straight" / "weights/best.safetensors"),
        load_file(tmp_path / "stopped" / "weights/best.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    last_a, last_b = (
        torch.load(tmp_path / name / "checkpoints/last.pt", weights_only=True)
        for name in ("straight", "stopped")
    )
    for part in ("model", "ema"):
        assert all(torch.equal(last_a[part][k], last_b[part][k]) for k in last_a[part]), part
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "straight" / "metrics.csv").drop(columns=TIMING_COLUMNS),
        pd.read_csv(tmp_path / "stopped" / "metrics.csv").drop(columns=TIMING_COLUMNS),
        check_exact=True,
    )
    assert straight["test_acc"] == resumed["test_acc"]


def test_the_in_memory_cifar10_pipeline_holds_the_data_once_on_the_gpu(record_property):
    """CIFAR-10's 50,000 training images as uint8 on the GPU, batched with the whole recipe
    (RandAugment 2 x 9, random erasing, Mixup/CutMix): the peak is the data plus a few batches."""
    images = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8)
    split = Split(images, torch.randint(0, 10, (50_000,)))
    data_bytes = images.numel() + split.labels.numel() * 8
    device = torch.device("cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    batches = make_batches(
        split,
        256,
        image_size=32,
        mean=[0.5] * 3,
        std=[0.25] * 3,
        device=device,
        shuffle=True,
        augment=BatchAugment(4, True, 2, 9, 0.25),
        mix=MixBatch(10, 0.8, 1.0),
        seed=0,
    )
    count = 0
    for x, _y in batches:
        count += len(x)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    record_property("data_mib", round(data_bytes / 2**20, 1))
    record_property("peak_gpu_mib", round(peak / 2**20, 1))
    print(
        f"in-memory CIFAR-10 pipeline: peak {peak / 2**20:.1f} MiB on the GPU for "
        f"{data_bytes / 2**20:.1f} MiB of data"
    )
    assert count == 50_000
    # One float32 batch is 3 MiB; the augmentations hold a few at a time.
    assert data_bytes <= peak <= data_bytes + 64 * 2**20
