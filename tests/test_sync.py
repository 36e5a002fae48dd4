"""No step of training makes the CPU wait for the GPU (steps 2..N; step 1 may set things up).

On a CPU the waits are found by ``DeviceSyncWatch``, which follows the device's tensors through a
real run; on a GPU, by CUDA's own sync debug mode."""

from __future__ import annotations

import pytest
import torch

import src.training.fit
import src.training.loops
from src.training.run import train
from tests.conftest import TINY_RUN, compose_config
from tests.sync_watch import DeviceSyncWatch

# The CIFAR-10 preset's recipe: every augmentation, Mixup/CutMix, EMA, accumulation, clipping.
RECIPE = [
    "augment.crop_padding=2",
    "augment.horizontal_flip=true",
    "augment.randaugment_ops=2",
    "augment.random_erasing=0.25",
    "augment.mixup_alpha=0.8",
    "augment.cutmix_alpha=1.0",
    "trainer.ema=true",
    "trainer.accumulate_steps=2",
    "trainer.grad_clip=1.0",
    "trainer.label_smoothing=0.1",
    "trainer.batch_size=128",
    "trainer.epochs=1",
]


class AfterFirstStep:
    """The training batches, with ``window`` open from the second batch to the last step's end."""

    def __init__(self, batches, window):
        self.batches, self.window = batches, window

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        batches = iter(self.batches)
        yield next(batches)
        with self.window():
            yield from batches


def run_watched(tmp_path, monkeypatch, window_for, overrides=()):
    """A real train() run whose training steps 2..N happen inside ``window_for(net, batches)``."""
    original = src.training.fit.train_one_epoch

    def watched(net, batches, *args, **kwargs):
        with window_for(net, batches) as window:
            return original(net, AfterFirstStep(batches, window), *args, **kwargs)

    monkeypatch.setattr(src.training.fit, "train_one_epoch", watched)
    monkeypatch.setattr(
        src.training.loops, "CHECK_EVERY", 3
    )  # stop and NaN checks inside the window
    cfg = compose_config(TINY_RUN + RECIPE + list(overrides))
    train(cfg, tmp_path / "run")


def test_training_steps_do_not_wait_for_the_device(tmp_path, monkeypatch):
    watches = []

    @contextlib_contextmanager
    def window_for(net, batches):
        held = [batches.images, batches.labels, batches.mean, batches.std]
        on_device = [*net.parameters(), *net.buffers(), *(t for t in held if torch.is_tensor(t))]
        with DeviceSyncWatch(on_device) as watch:
            watches.append(watch)
            yield watch.recording_waits

    run_watched(tmp_path, monkeypatch, window_for)
    [watch] = watches
    assert sorted(set(watch.waits)) == []


def test_the_watch_sees_the_waits_it_is_meant_to_see():
    weights = torch.randn(4)
    host = torch.arange(4)
    with DeviceSyncWatch([weights]) as watch, watch.recording_waits():
        loss = (weights * 2).sum()
        loss.item()  # a read
        bool(loss > 0)  # a read
        weights[weights > 0]  # a boolean mask: data-dependent size
        weights + host  # a CPU tensor handed to a device op
        torch.tensor([1.0, 2.0], device="cpu")  # built from Python data
        host.to("cpu")  # a blocking move
        host.to("cpu", non_blocking=True)  # fine
        flag = torch.zeros((), dtype=torch.bool)
        flag.copy_(torch.isfinite(loss), non_blocking=True)  # fine: the way back
        bool(flag)  # fine: a host tensor
    kinds = [w.split(" at ")[0] for w in watch.waits]
    expected = [
        "item read on the CPU",
        "__bool__ read on the CPU",
        "with a boolean mask",
        "given a CPU tensor (4,)",
        "tensor(..., device=) built from Python data",
        "to blocking copy to the device",
    ]
    assert len(kinds) == len(expected)
    for kind, words in zip(kinds, expected):
        assert words in kind
    assert all("test_sync.py" in w for w in watch.waits)  # each names the line that waits


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_steps_pass_cuda_sync_debug_mode(tmp_path, monkeypatch):
    @contextlib_contextmanager
    def window_for(net, batches):
        @contextlib_contextmanager
        def strict():
            torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
            try:
                yield
            finally:
                torch.cuda.set_sync_debug_mode("default")

        yield strict

    run_watched(
        tmp_path, monkeypatch, window_for, ["trainer.device=cuda", "trainer.precision=bf16"]
    )


from contextlib import contextmanager as contextlib_contextmanager  # noqa: E402
