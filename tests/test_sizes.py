"""Every dataset trains at its own size with the default model: the native size in a sensible patch
grid, crop shifts in proportion, and one line in the log when a model resizes by more than 2x."""

from __future__ import annotations

import logging

import pytest
import torch
import torchvision.datasets as tv

from src.data import load_dataset
from src.data.sizes import crop_pixels, resize_note
from src.errors import ConfigError
from src.training.checks import check_config
from src.training.run import train
from tests.conftest import TINY_RUN, compose_config


def input_of(cfg) -> tuple[int, int, int, int]:
    """(held at, model input, patch, crop shift in pixels) of a composed config."""
    crop = crop_pixels(
        cfg.augment.crop_padding, cfg.dataset.augment.crop_fraction, cfg.model.image_size
    )
    return cfg.dataset.image_size, cfg.model.image_size, cfg.model.patch_size, crop


@pytest.mark.parametrize(
    "dataset, expected",
    [
        ("digits", (8, 16, 4, 1)),  # the default run, unchanged: 8x8 digits upsampled to 16
        ("mnist", (28, 28, 4, 2)),
        ("fashion_mnist", (28, 28, 4, 2)),
        ("cifar10", (32, 32, 4, 4)),
        ("cifar100", (32, 32, 4, 4)),
        ("svhn", (32, 32, 4, 2)),
        ("gtsrb", (32, 32, 4, 2)),
        ("caltech101", (64, 64, 8, 8)),  # decoded (and cached) at 64, as its config asks
        ("folder", (64, 64, 8, 8)),
    ],
)
def test_the_default_model_takes_each_datasets_own_size(dataset, expected):
    cfg = compose_config([f"dataset={dataset}"])
    assert input_of(cfg) == expected
    check_config(cfg)  # the patch divides the input
    assert resize_note(cfg.dataset, cfg.model, cfg.dataset.image_size) is None


def test_paper_shapes_keep_224_and_the_shifts_keep_their_proportion():
    cfg = compose_config(["model=vit_small", "dataset=cifar10"])
    assert input_of(cfg) == (32, 224, 16, 28)  # 4 px of 32 is 28 px of 224
    cfg = compose_config(["model=vit_tiny", "dataset=folder"])
    assert input_of(cfg) == (224, 224, 16, 28)  # folders are decoded at the model's size


def test_presets_keep_their_sizes():
    assert input_of(compose_config(["+experiment=mnist_cpu"])) == (28, 16, 4, 1)
    assert input_of(compose_config(["+experiment=mnist"])) == (28, 28, 4, 2)
    assert input_of(compose_config(["+experiment=cifar10"])) == (32, 32, 4, 4)
    assert input_of(compose_config(["+experiment=gtsrb"])) == (32, 32, 4, 2)
    # The folder of CIFAR-10 JPEGs is decoded at the model's 32 px: the data's own size.
    assert input_of(compose_config(["+experiment=cifar10_cpu"])) == (32, 32, 4, 4)


@pytest.mark.parametrize(
    "overrides, data_size, words",
    [
        (
            ["model=vit_small", "dataset=cifar10"],
            32,
            "dataset=cifar10 holds 32x32 images and model=vit_small takes 224x224 "
            "(196 patches of 16x16), so every image is upsampled 7.0x; "
            "to train nearer the data's own size, set model.image_size=32 model.patch_size=4.",
        ),
        (["dataset=mnist", "model.image_size=8", "model.patch_size=2"], 28, "is downsampled 3.5x"),
        (["+experiment=mnist_cpu"], 28, None),  # 28 -> 16 is less than 2x
        ([], 8, None),  # the digits' 8 -> 16 is 2x
        (["dataset=folder"], 8, None),  # 8 -> 64, but 64/8 is what it would suggest: nothing to say
    ],
)
def test_a_resize_of_more_than_2x_is_one_sentence(overrides, data_size, words):
    cfg = compose_config(overrides)
    note = resize_note(cfg.dataset, cfg.model, data_size)
    if words is None:
        assert note is None
    else:
        assert words in note and "\n" not in note


def test_training_says_when_the_model_resizes_the_images(tmp_path, caplog):
    cfg = compose_config(
        [
            *TINY_RUN,
            "trainer.epochs=1",
            "trainer.visualize=false",
            "model.image_size=48",
            "model.patch_size=12",
        ]
    )
    with caplog.at_level(logging.WARNING):
        train(cfg, tmp_path)
    lines = [r.message for r in caplog.records if "is upsampled 6.0x" in r.message]
    assert lines == [
        "dataset=digits holds 8x8 images and model=vit_digits takes 48x48 (16 patches "
        "of 12x12), so every image is upsampled 6.0x; to train nearer the data's own "
        "size, set model.image_size=16 model.patch_size=4."
    ]


def fake_mnist(n: int = 200) -> tv.MNIST:
    """A torchvision MNIST object holding random digits, made without files or a download."""
    dataset = tv.MNIST.__new__(tv.MNIST)
    dataset.data = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8)
    dataset.targets = torch.arange(n) % 10
    return dataset


def test_torchvision_arrays_follow_dataset_image_size_and_channels(tmp_path, monkeypatch):
    """Both settings used to be ignored for MNIST, CIFAR and SVHN (kept as they came)."""
    monkeypatch.setattr("src.data.torchvision_source._open", lambda *args: fake_mnist())
    native = load_dataset(compose_config(["dataset=mnist", f"dataset.root={tmp_path}"]).dataset)
    assert (native.image_size, native.channels) == (28, 1)

    cfg = compose_config(
        ["dataset=mnist", f"dataset.root={tmp_path}", "dataset.image_size=16", "dataset.channels=3"]
    )
    data = load_dataset(cfg.dataset)
    assert (data.image_size, data.channels) == (16, 3)
    assert data.test.images.shape[1:] == (3, 16, 16) and data.test.images.dtype == torch.uint8
    assert torch.equal(data.test.images[:, 0], data.test.images[:, 2])  # grey, as three channels
    assert len(data.mean) == 3


def test_digits_follow_dataset_image_size():
    data = load_dataset(compose_config(["dataset.image_size=16"]).dataset)
    assert data.image_size == 16 and data.train.images.shape[1:] == (1, 16, 16)


@pytest.mark.parametrize(
    "override, sentence",
    [
        ("dataset.channels=2", "dataset.channels=2 is not supported; use 1 (grey) or 3 (RGB)."),
        ("dataset.image_size=0", "dataset.image_size=0 must be a whole number of pixels, e.g. 32."),
    ],
)
def test_bad_sizes_and_channels_are_named(tmp_path, override, sentence):
    cfg = compose_config(["dataset=cifar10", f"dataset.root={tmp_path}", override])
    with pytest.raises(ConfigError) as err:
        load_dataset(cfg.dataset)
    assert str(err.value) == sentence
