"""benchmarks/cpu_levers.py: a preset's training step with each lever, as ratios in one run (the
numbers themselves: docs/results.md)."""

from __future__ import annotations

import re

import pytest
import torch

from tests.conftest import ROOT, TINY_RUN

TINY = TINY_RUN  # 4x4 patches of the digits at 16x16
ROW = re.compile(r"^(.*?)\s+([\d,]+)\s+([\d.]+)x$")  # name, images/s, ratio


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import cpu_levers

    return cpu_levers


def test_each_lever_gets_a_row_with_its_ratio_to_the_preset(bench, capsys):
    levers = ["threads=1", "model.patch_drop_rate=0.5", "trainer.batch_size=32"]
    argv = [*TINY, "--steps", "2", "--repeats", "2", "--levers", *levers]
    threads = torch.get_num_threads()
    assert bench.main(argv) == 0
    assert torch.get_num_threads() == threads  # the threads lever put them back
    out = capsys.readouterr().out
    rows = {
        m[1]: (float(m[2].replace(",", "")), float(m[3]))
        for m in map(ROW.match, out.splitlines())
        if m
    }
    assert list(rows) == ["the preset", *levers]
    preset_rate, preset_ratio = rows["the preset"]
    assert preset_ratio == 1.0
    for name in levers:  # the ratio, from unrounded rates: the printed ones (to 1) bound it
        rate, ratio = rows[name]
        assert (
            (rate - 0.5) / (preset_rate + 0.5) - 0.005
            <= ratio
            <= (rate + 0.5) / (preset_rate - 0.5) + 0.005
        )
    assert "evaluation of the preset:" in out and out.startswith("CPU: ")


def test_a_lever_changes_only_what_it_names(bench):
    args = bench.parse_args([*TINY, "--steps", "1", "--classes", "3"])
    preset = bench.build(args.overrides, None, args)
    dropped = bench.build(args.overrides, "model.patch_drop_rate=0.5", args)
    one_thread = bench.build(args.overrides, "threads=1", args)
    doubled = bench.build(args.overrides, "trainer.batch_size=128", args)
    assert preset.model.patch_drop.drop_prob == 0.0 and dropped.model.patch_drop.drop_prob == 0.5
    assert one_thread.threads == 1 and preset.threads == torch.get_num_threads()
    assert preset.batches[0][0].shape == (64, 1, 16, 16) and doubled.batches[0][0].shape[0] == 128
    assert preset.batches[0][1].max() < 3


def test_the_default_levers_follow_the_presets_shape(bench, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(bench.os, "sched_getaffinity", lambda pid: {0, 1})
    mnist = bench.default_levers(["+experiment=mnist_cpu"])
    assert {"trainer.precision=bf16", "threads=1", "model.patch_drop_rate=0.5"} <= set(mnist)
    assert "trainer.batch_size=256" in mnist and "model.patch_size=8" in mnist  # 16 px / 8
    assert "model.global_pool=avg" in mnist
    cifar = bench.default_levers(["+experiment=cifar10_cpu"])  # drops half its patches, averages
    assert {"model.patch_drop_rate=0", "model.global_pool=token"} <= set(cifar)
    # 12 px: no room for 8 px patches
    odd = bench.default_levers([*TINY_RUN, "model.image_size=12"])
    assert not any(lever.startswith("model.patch_size") for lever in odd)
    assert [lever for lever in mnist if lever.startswith("threads=")] == ["threads=1"]
    monkeypatch.setattr(bench.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})  # 4 cores to use
    assert "threads=4" in bench.default_levers(["+experiment=mnist_cpu"])


@pytest.mark.parametrize(
    "lever, words",
    [
        ("model.num_heads=3", "model.embed_dim=32 is not divisible by model.num_heads=3"),
        ("threads=0", "threads=0 must name at least one thread"),
        ("threads=many", "threads=many must name at least one thread"),
        ("+model.nope=1", "model.nope is not a model setting"),
        ("model.nope=1", "Could not override 'model.nope'"),
    ],
)
def test_a_bad_lever_is_one_sentence_and_exit_2(bench, capsys, lever, words):
    assert bench.main([*TINY, "--steps", "1", "--repeats", "1", "--levers", lever]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
