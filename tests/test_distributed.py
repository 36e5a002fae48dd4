"""torchrun + DistributedDataParallel on CPU (gloo): one run folder, the same gradients, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import inference
from src import distributed
from tests.conftest import TINY_RUN, free_port, torchrun
from tests.helpers.first_step import global_batch, make_model


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
def test_ranks_prepare_data_in_turn_draw_their_own_augmentation_and_agree_to_stop(tmp_path):
    result = torchrun("tests/helpers/ddp_checks.py", str(tmp_path))
    assert result.returncode == 0, result.stderr
    zero, one = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert zero["left"] <= one["entered"]  # rank 0 prepared the data before rank 1 began
    assert torch.equal(zero["order"], one["order"])  # one permutation, shared out
    assert not set(zero["first_labels"].tolist()) & set(one["first_labels"].tolist())
    assert not torch.equal(zero["first_images"], one["first_images"])  # augmented apart
    # Rank 1 asked to stop after its 3rd batch; checks every 2 steps: both stopped at step 4.
    assert zero["stopped_after"] == one["stopped_after"] == 4
    assert not zero["complete"] and not one["complete"]
    # Two accumulated batches per rank (gradients synced on the last only) make one step of
    # the global batch of 8: SGD's weights equal a single process's on all 8 at once.
    model = make_model()
    images, labels = global_batch()
    F.cross_entropy(model(images), labels).backward()
    for name, param in model.named_parameters():
        expected = param.detach() - 0.1 * param.grad
        torch.testing.assert_close(
            zero["accumulated"][name], expected, atol=1e-6, rtol=1e-5, msg=name
        )
        torch.testing.assert_close(
            one["accumulated"][name], expected, atol=1e-6, rtol=1e-5, msg=name
        )


def dated_runs(root: Path) -> str:
    """The default run folder's dated path, under ``root``."""
    return f"hydra.run.dir={root}/${{shared_now:%Y-%m-%d}}/${{shared_now:%H-%M-%S}}"


def only_run(root: Path) -> Path:
    [day] = root.iterdir()
    [run] = day.iterdir()  # one folder for the run, not one per process or per start
    return run


TIMINGS = [
    "epoch_seconds",
    "images_per_second",
    "run_seconds",
]  # the columns that differ from run to run


def same_metrics(run: Path, reference: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        pd.read_csv(run / "metrics.csv").drop(columns=TIMINGS),
        reference.drop(columns=TIMINGS),
        check_exact=True,
    )


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """A 2-process run of TINY_RUN on one node (torchrun --standalone), uninterrupted: its run
    folder, and its metrics as they were when it completed."""
    runs = tmp_path_factory.mktemp("two-processes")
    result = torchrun("train.py", dated_runs(runs), *TINY_RUN)
    assert result.returncode == 0, result.stderr
    run = only_run(runs)
    return run, pd.read_csv(run / "metrics.csv")


@pytest.mark.slow
def test_torchrun_writes_one_run_folder_reports_the_whole_test_set_and_resumes(
    tmp_path, two_processes
):
    run, _ = two_processes
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["processes"] == 2
    assert summary["global_batch_size"] == 128
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.columns) == [
        "epoch",
        "step",
        "lr",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "epoch_seconds",
        "images_per_second",
        "run_seconds",
    ]
    assert metrics["step"].tolist() == [9, 18]  # 1257 images: 629 per process, 9 full batches of 64
    assert len(list((run / "tensorboard").glob("events.*"))) == 2  # rank 0's scalars + hparams
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]

    # The report covers the whole test set, each image with its own label: a single process's
    # report of the same weights is the same, and the test accuracy is its confusion trace.
    single = tmp_path / "single"
    shutil.copytree(run, single)
    assert inference.main(["--run", str(single), "--report", "--device", "cpu"]) == 0
    for table in ("metrics_per_class.csv", "confusion_matrix.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(run / table), pd.read_csv(single / table))
    matrix = pd.read_csv(run / "confusion_matrix.csv").set_index("true \\ predicted").to_numpy()
    assert matrix.sum() == summary["split_sizes"]["test"] == 270
    assert summary["test_acc"] == pytest.approx(matrix.trace() / matrix.sum())

    resumed = torchrun("train.py", f"resume={single}", "trainer.epochs=3")
    assert resumed.returncode == 0, resumed.stderr
    assert pd.read_csv(single / "metrics.csv")["epoch"].tolist() == [1, 2, 3]
    assert json.loads((single / "summary.json").read_text())["resumes"][0]["from_epoch"] == 2


@pytest.mark.slow
def test_two_nodes_train_one_run_equal_to_two_processes_on_one_node(tmp_path, two_processes):
    """Two torchrun "nodes" on this machine, one process each, meeting at a c10d rendezvous: the
    same command on both, as on a cluster (with c10d, ranks go by arrival; --node_rank is only
    read by the static rendezvous)."""
    rendezvous = (
        "--nnodes=2",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{free_port()}",
        "--rdzv_id=two-nodes",
    )
    nodes = [
        torchrun(
            "train.py", dated_runs(tmp_path), *TINY_RUN, processes=1, launch=rendezvous, wait=False
        )
        for _ in range(2)
    ]
    for node in nodes:
        _, stderr = node.communicate(timeout=600)
        assert node.returncode == 0, stderr
    run = only_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["processes"] == 2
    same_metrics(run, two_processes[1])
    assert (
        summary["test_acc"]
        == json.loads((two_processes[0] / "summary.json").read_text())["test_acc"]
    )


@pytest.mark.slow
def test_killed_ranks_are_restarted_and_continue_the_same_run_folder(tmp_path, two_processes):
    """SIGKILL mid-epoch under --max-restarts=2: rank 1 in epoch 1 (no checkpoint yet: the run
    starts over in its folder), then rank 0, the one that writes, in epoch 2 (the run continues
    from epoch 1's checkpoint). The job completes with the metrics of a run never killed."""
    result = torchrun(
        "--max-restarts=2",
        "tests/helpers/dying_train.py",
        "0:1:1:4,1:0:2:4",
        dated_runs(tmp_path),
        *TINY_RUN,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("exitcode: -9") == 2  # torchrun saw both deaths
    run = only_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and "error" not in summary
    assert [(r["restart"], r["from_epoch"]) for r in summary["restarts"]] == [(1, 0), (2, 1)]
    same_metrics(run, two_processes[1])
    assert "torchrun restart 2: continuing" in (run / "train.log").read_text()


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
    assert distributed.any_rank(True, False) == (True, False)
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
