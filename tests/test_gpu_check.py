"""What the machine will do: precision=auto never picks emulated bf16, and the check-gpu command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from src.errors import ConfigError
from src.training import device, gpu_check
from tests.conftest import ROOT

CUDA = torch.device("cuda")


def pretend_gpu(monkeypatch, native: bool, emulated: bool = True, old_torch: bool = False) -> None:
    """A GPU whose bf16 is native (Ampere and newer) or only emulated (V100, T4)."""

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return native or (including_emulation and emulated)

    def old_is_bf16_supported() -> bool:  # torch without the including_emulation argument
        return True

    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", old_is_bf16_supported if old_torch else is_bf16_supported
    )
    monkeypatch.setattr(
        torch.cuda, "get_device_capability", lambda device=None: (8, 0) if native else (7, 0)
    )


@pytest.mark.parametrize(
    "old_torch", [False, True], ids=["torch-with-emulation-flag", "older-torch"]
)
def test_auto_precision_is_bf16_only_where_the_gpu_has_it_natively(monkeypatch, old_torch):
    pretend_gpu(monkeypatch, native=True, old_torch=old_torch)
    assert device.resolve_precision("auto", CUDA) == torch.bfloat16
    assert device.resolve_precision("bf16", CUDA) == torch.bfloat16

    pretend_gpu(monkeypatch, native=False, emulated=True, old_torch=old_torch)
    assert device.resolve_precision("auto", CUDA) is None  # emulated bf16 is slower than fp32
    with pytest.raises(ConfigError, match="trainer.precision=bf16 .* no native bfloat16"):
        device.resolve_precision("bf16", CUDA)
    assert device.resolve_precision("fp32", CUDA) is None


def test_the_cpu_keeps_fp32_unless_bf16_is_asked_for():
    cpu = torch.device("cpu")
    assert device.resolve_precision("auto", cpu) is None
    assert device.resolve_precision("bf16", cpu) == torch.bfloat16


def test_the_report_says_when_bf16_is_only_emulated(monkeypatch):
    facts = gpu_check.check(compile_trial=False)
    pretend_gpu(monkeypatch, native=False, emulated=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    facts["bf16"] = gpu_check.bf16_support()
    assert facts["bf16"] == {"native": False, "emulated": True}
    assert "emulated only" in gpu_check.format_report(facts)


@pytest.mark.slow
def test_check_gpu_answers_every_question_and_tries_compile():
    started = subprocess.run(
        [sys.executable, "-m", "src.training.gpu_check", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert started.returncode == 0, started.stderr
    facts = json.loads(started.stdout)
    assert facts["torch"] == torch.__version__
    assert facts["cuda_available"] == torch.cuda.is_available()
    assert len(facts["gpus"]) == torch.cuda.device_count()
    assert set(facts["bf16"]) == {"native", "emulated"} and set(facts["nccl"]) == {
        "available",
        "version",
    }
    assert facts["compile"]["works"] in (True, False) and facts["compile"]["seconds"] >= 0
    assert facts["auto_device"] == str(device.resolve_device("auto"))  # what train.py will pick
    assert facts["auto_precision"] == (
        "bf16"
        if device.resolve_precision("auto", device.resolve_device("auto")) == torch.bfloat16
        else "fp32"
    )


def test_check_gpu_prints_one_line_per_question_without_hydra():
    # Hydra is made unimportable: the command must still answer (the GPU machine may lack Hydra).
    code = (
        "import sys; sys.modules['hydra'] = None; sys.modules['omegaconf'] = None; "
        "from src.training.gpu_check import main; main(['--no-compile'])"
    )
    started = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert started.returncode == 0, started.stderr
    labels = [line.split("  ")[0].strip() for line in started.stdout.splitlines()]
    assert labels[0] == "torch" and labels[1].startswith("GPU")
    for label in (
        "bf16 (native)",
        "torch.compile",
        "NCCL",
        "trainer.device=auto",
        "trainer.precision=auto",
    ):
        assert label in labels
    assert "not tried (--no-compile)" in started.stdout
