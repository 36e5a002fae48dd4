"""torchrun + DistributedDataParallel on CPU (gloo): one run folder, the same gradients, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from src import distributed
from tests.conftest import ROOT, TINY_RUN
from tests.helpers.first_step import global_batch, make_model


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes share this machine's cores
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={processes}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )


@pytest.mark.slow
def test_two_processes_give_the_single_process_gradient_of_the_global_batch(tmp_path):
    result = torchrun("tests/helpers/ddp_first_step.py", str(tmp_path / "grads.pt"))
    assert result.returncode == 0, result.stderr
    ddp_grads = torch.load(tmp_path / "grads.pt", weights_only=True)

    model = make_model()
    images, labels = global_batch()
    F.cross_entropy(model(images), labels).backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(ddp_grads[name], param.grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.slow
def test_torchrun_writes_one_run_folder_and_resumes_in_it(tmp_path):
    dated = f"hydra.run.dir={tmp_path}/runs/${{shared_now:%Y-%m-%d}}/${{shared_now:%H-%M-%S}}"
    result = torchrun("train.py", dated, *TINY_RUN, "trainer.visualize=false")
    assert result.returncode == 0, result.stderr
    [day] = (tmp_path / "runs").iterdir()
    [run] = day.iterdir()  # one folder for the run, not one per process
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["processes"] == 2
    assert summary["global_batch_size"] == 128
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.columns) == ["epoch", "step", "lr", "train_loss", "train_acc", "val_loss",
                                     "val_acc", "epoch_seconds", "images_per_second"]
    assert metrics["step"].tolist() == [9, 18]  # 1257 images: 629 per process, 9 full steps of 64
    assert len(list((run / "tensorboard").glob("events.*"))) == 2  # rank 0's scalars + hparams
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]

    resumed = torchrun("train.py", f"resume={run}", "trainer.epochs=3")
    assert resumed.returncode == 0, resumed.stderr
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1, 2, 3]
    assert json.loads((run / "summary.json").read_text())["resumes"][0]["from_epoch"] == 2


def test_shards_cover_the_epoch_once_and_take_equal_steps(monkeypatch):
    order = torch.arange(10)
    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 4)
    shares = []
    for rank in range(4):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda rank=rank: rank)
        shares.append(distributed.shard(order, pad=True))
        assert len(distributed.shard(order, pad=False)) == distributed.shard_size(10, pad=False)
    assert [len(s) for s in shares] == [3, 3, 3, 3]  # padded from 10 to 12
    assert sorted(torch.cat(shares).tolist()) == sorted(list(range(10)) + [0, 1])
    assert distributed.shard_size(10, pad=True) == 3


def test_without_torchrun_nothing_is_distributed():
    assert not distributed.launched() and distributed.is_main()
    order = torch.randperm(7)
    assert torch.equal(distributed.shard(order, pad=True), order)
    assert distributed.any_rank(True, torch.device("cpu")) is True
