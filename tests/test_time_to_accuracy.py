"""benchmarks/time_to_accuracy.py: the time a run took to each accuracy, from its metrics.csv,
and its speed beside the machine's matmul (the numbers themselves: docs/results.md)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import ROOT, TINY_RUN


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import time_to_accuracy

    return time_to_accuracy


def test_it_trains_a_preset_and_reads_each_level_off_the_run(bench, tmp_path, capsys):
    run = tmp_path / "run"
    levels = ["0.05", "0.5", "1.0"]
    assert bench.main([*TINY_RUN, "trainer.epochs=3", "--out", str(run), "--levels", *levels]) == 0
    trained = capsys.readouterr().out
    metrics = pd.read_csv(run / "metrics.csv")
    for level in map(float, levels):
        reached = metrics[metrics["val_acc"] >= level]
        row = next(line for line in trained.splitlines() if line.startswith(f"{level:7.2%}"))
        if reached.empty:
            assert "not reached" in row
        else:
            epoch, seconds = reached.iloc[0][["epoch", "run_seconds"]]
            assert row.split()[1:] == [str(int(epoch)), f"{seconds:.1f}"]
    assert "s wall (train.py, start to exit); test acc" in trained
    assert "time: before the first epoch (start-up, data)" in trained
    assert "GFLOP/s; matmul here:" in trained

    assert bench.main(["--run", str(run), "--levels", *levels]) == 0  # read again, no training
    read = capsys.readouterr().out
    table = lambda out: [line for line in out.splitlines() if "%" in line[:8]]  # noqa: E731
    assert table(read) == table(trained) and "(train_seconds)" in read


def test_a_training_image_costs_its_forward_three_times_less_the_input_gradient(bench):
    """A 1-block ViT on 8x8 images in 4x4 patches, counted by hand: 4 patches and a class token,
    width 32, an MLP of 128; the backward pass costs twice the forward but for the patch
    embedding, whose input needs no gradient."""
    model = dict(image_size=8, patch_size=4, in_chans=1, num_classes=10, embed_dim=32)
    tokens, width, patches = 5, 32, 4
    embed = 2 * 16 * width * patches
    forward = (
        embed
        + 2 * tokens * width * 3 * width  # q, k, v
        + 2 * (2 * tokens * tokens * width)  # scores, and their weighting of v (both heads)
        + 2 * tokens * width * width  # the heads' projection
        + 2 * (2 * tokens * width * 4 * width)  # the MLP
        + 2 * width * 10  # the head, on the class token
    )
    assert (
        bench.training_flops_per_image({**model, "depth": 1, "num_heads": 2}) == 3 * forward - embed
    )


def test_the_run_time_splits_into_parts_that_add_up_to_the_whole(bench):
    """Three epochs of 800 training images at 100 images/s (8 s each) in epochs of 9 s (1 s of
    validation), ending 12, 22 and 32 s after the start, in a 40 s run."""
    metrics = pd.DataFrame(
        {
            "run_seconds": [12.0, 22.0, 32.0],
            "epoch_seconds": [9.0] * 3,
            "images_per_second": [100.0] * 3,
        }
    )
    line = bench.time_split(metrics, {"split_sizes": {"train": 800}}, wall=40.0)
    assert line == (
        "time: before the first epoch (start-up, data) 3.0 s (8%), training 24.0 s (60%), "
        "validation 3.0 s (8%), between epochs (checkpoints, logs) 2.0 s (5%), "
        "after the last epoch (test, figures, exit) 8.0 s (20%)"
    )
    read_back = bench.time_split(
        metrics, {"split_sizes": {"train": 800}, "train_seconds": 36.0}, None
    )
    assert read_back.endswith("after the last epoch (test, figures, exit) 4.0 s (11%)")


@pytest.mark.parametrize(
    "args, sentence",
    [
        ([], "give train.py overrides (a preset) or --run RUN_FOLDER"),
        (["--run", "nowhere"], "--run nowhere: no summary.json there"),
        (["x=1", "--levels", "90"], "--levels are accuracies between 0 and 1"),
    ],
)
def test_bad_input_gets_one_sentence(bench, args, sentence, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(args)
    assert exit_.value.code == 2 and sentence in capsys.readouterr().err


def test_a_run_from_before_run_seconds_is_one_sentence(bench, capsys):
    old_run = ROOT / "tests" / "fixtures" / "run_before_rooms"
    assert bench.main(["--run", str(old_run)]) == 1
    assert "has no finished epochs with run_seconds" in capsys.readouterr().err


def test_progressive_resizing_counts_each_epoch_at_the_size_it_trained_at(bench, monkeypatch):
    """Epochs at 8 px and 16 px: each epoch's GFLOP/s is its images/s times the FLOPs of an image
    of its own size, not of the full one."""
    monkeypatch.setattr(bench, "matmul_gflops", lambda: 100.0)
    model = dict(patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=1, num_heads=2)
    small, full = (bench.training_flops_per_image({**model, "image_size": s}) for s in (8, 16))
    metrics = pd.DataFrame(
        {"images_per_second": [4000.0, 4000.0, 1000.0], "train_image_size": [8, 8, 16]}
    )
    line = bench.speed_line(metrics, {**model, "image_size": 16})
    assert f"x {small / 1e6:,.1f} / {full / 1e6:,.1f} MFLOP per image at 8 px / 16 px" in line
    assert f"= {4000.0 * small / 1e9:.2f} GFLOP/s" in line  # the median epoch: 8 px, 4,000/s
