"""benchmarks/where_time_goes.py: an epoch under torch.profiler, each part's time put where it
was spent (the numbers themselves: docs/results.md)."""

from __future__ import annotations

import re
import time

import pytest

from src.data.transforms import BatchAugment
from src.runs.folder import RunFolder
from src.training.loops import labelled
from tests.conftest import ROOT, TINY_RUN


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import where_time_goes

    return where_time_goes


def seconds_of(output: str, part: str) -> float:
    [line] = [line for line in output.splitlines() if line.strip().startswith(part)]
    return float(re.findall(r"([\d.]+)\s+[\d.]+%", line)[0])


def test_a_slow_part_is_counted_where_it_was_spent(bench, monkeypatch, capsys):
    """Each part made slower by a known sleep shows at least that much more time, in its row."""
    augment, save = BatchAugment.__call__, RunFolder.save_checkpoint

    def slow_augment(self, x, generator):
        time.sleep(0.02)
        return augment(self, x, generator)

    def slow_save(self, state):
        time.sleep(0.5)
        return save(self, state)

    monkeypatch.setattr(BatchAugment, "__call__", slow_augment)
    monkeypatch.setattr(RunFolder, "save_checkpoint", slow_save)
    assert bench.main(TINY_RUN) == 0
    output = capsys.readouterr().out
    steps = int(re.search(r"one epoch of (\d+) steps", output)[1])
    assert seconds_of(output, "batches and augmentation") >= 0.02 * steps
    assert seconds_of(output, "checkpoint and best weights") >= 0.5
    assert seconds_of(output, "forward and loss") < 0.5  # not where the sleeps were
    training_parts = ("batches", "forward", "backward", "optimizer step", "the rest")
    inside = sum(seconds_of(output, part) for part in training_parts)
    assert inside == pytest.approx(seconds_of(output, "training"), abs=0.03)
    shares = [float(s) for s in re.findall(r"([\d.]+)%", output.split("the 8 operators")[0])]
    assert sum(shares[:1] + shares[6:]) == pytest.approx(100, abs=0.5)  # the epoch's parts
    assert "aten::" in output.split("the 8 operators")[1]


def test_labels_cost_nothing_outside_a_profiler():
    from contextlib import nullcontext

    from torch.profiler import profile

    assert isinstance(labelled("backward"), nullcontext)
    with profile():
        assert not isinstance(labelled("backward"), nullcontext)


def test_a_bad_setting_is_one_sentence(bench, capsys):
    assert bench.main(["trainer.val_every=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("trainer.val_every=0 must be a whole number") and "\n" not in err
