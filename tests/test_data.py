"""The embedded digits dataset, its split, and the in-memory batch pipeline."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from src.data import BatchAugment, BatchLoader, Split, load_dataset, preprocess, stratified_split
from src.data.digits import read_digits
from src.data.stratified import stratified_holdout
from src.errors import ConfigError
from src.training.checks import check_config
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def digits():
    return load_dataset(compose_config().dataset)


def test_digits_is_the_real_sklearn_dataset_split_three_ways(digits):
    sizes = len(digits.train), len(digits.val), len(digits.test)
    assert sum(sizes) == 1797
    assert sizes[1] == pytest.approx(0.15 * 1797, abs=2) and sizes[2] == pytest.approx(
        0.15 * 1797, abs=2
    )
    assert digits.class_names == [str(i) for i in range(10)]
    assert digits.channels == 1 and digits.image_size == 8
    assert digits.train.images.dtype == torch.uint8 and int(digits.train.images.max()) == 255


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(5), 40)
    train, val, test = stratified_split(labels, 0.2, 0.2, seed=3)
    assert len(set(train) | set(val) | set(test)) == 200  # disjoint and complete
    for part in (val, test):
        assert np.bincount(labels[part]).tolist() == [8] * 5  # every class in proportion
    again = stratified_split(labels, 0.2, 0.2, seed=3)
    other = stratified_split(labels, 0.2, 0.2, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(test, other[2])


def test_the_split_holds_out_what_scikit_learns_train_test_split_does():
    """src/data/stratified.py gives scikit-learn's indices (so the splits behind every measured
    number stay as they were), and refuses what it refuses."""
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(0)
    compared = refused = 0
    while compared < 200 or refused < 10:
        labels = rng.integers(0, int(rng.integers(2, 12)), int(rng.integers(4, 300)))
        if np.bincount(labels)[np.unique(labels)].min() < 2:
            continue  # holdout() refuses a class of one first, in its own words
        fraction = float(rng.choice([0.01, 0.1, 0.15, 0.15 / 0.85, 0.5, 0.9, rng.random()]))
        seed = int(rng.integers(0, 10_000))
        try:
            expected = train_test_split(
                np.arange(len(labels)), test_size=fraction, stratify=labels, random_state=seed
            )
        except ValueError:
            with pytest.raises(ValueError):
                stratified_holdout(labels, fraction, seed)
            refused += 1
            continue
        got = stratified_holdout(labels, fraction, seed)
        assert all(np.array_equal(e, g) and e.dtype == g.dtype for e, g in zip(expected, got))
        compared += 1


def test_the_digits_are_scikit_learns_read_without_importing_it(monkeypatch):
    from sklearn.datasets import load_digits

    expected = load_digits()
    for found in (importlib.util.find_spec, lambda name: None):  # the file, then load_digits
        monkeypatch.setattr(importlib.util, "find_spec", found)
        images, targets = read_digits()
        assert np.array_equal(images, expected.images)
        assert np.array_equal(targets, expected.target)


@pytest.mark.parametrize(
    "val, test, message",
    [(0.0, 0.2, "dataset.val_fraction=0.0"), (0.5, 0.6, "leaves nothing to train on")],
)
def test_bad_split_fractions_are_refused(val, test, message):
    with pytest.raises(ConfigError, match=message):
        stratified_split(np.repeat(np.arange(2), 10), val, test, seed=0)


@pytest.mark.parametrize("setting", ["dataset.val_fraction=2", "dataset.test_fraction=0"])
def test_a_bad_fraction_is_refused_with_the_other_settings_before_any_download(setting):
    """Not after MNIST's download (or its failure, offline), as when the split checked it alone."""
    with pytest.raises(ConfigError, match=rf"^{setting} must be between 0 and 1 \(exclusive\)"):
        check_config(compose_config(["dataset=mnist", setting]))


def test_normalisation_uses_train_statistics(digits):
    x = preprocess(digits.train.images, 8, digits.mean, digits.std)
    assert x.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert x.std().item() == pytest.approx(1.0, abs=1e-3)


def test_preprocess_resizes_to_the_model_size():
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    assert preprocess(images, 16, [0.5], [0.25]).shape == (3, 1, 16, 16)


def test_random_crop_shifts_each_image_by_at_most_the_padding():
    torch.manual_seed(0)
    images = torch.randint(1, 256, (64, 2, 6, 6), dtype=torch.uint8)
    shifted = BatchAugment(crop_padding=1)(images, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    moved = 0
    for original, out in zip(images, shifted):
        padded = torch.nn.functional.pad(original, (1, 1, 1, 1))
        windows = [padded[:, dy : dy + 6, dx : dx + 6] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out, w) for w in windows)  # a shift of the original, nothing else
        moved += not torch.equal(out, original)
    assert moved > 32  # most of the batch was actually shifted


def test_horizontal_flip_flips_about_half():
    images = torch.arange(4 * 4).view(1, 1, 4, 4).repeat(200, 1, 1, 1).to(torch.uint8)
    out = BatchAugment(horizontal_flip=True)(images, torch.Generator().manual_seed(0))
    flipped = sum(torch.equal(o, images[0].flip(2)) for o in out)
    unchanged = sum(torch.equal(o, images[0]) for o in out)
    assert flipped + unchanged == 200 and 70 < flipped < 130


def test_training_loader_takes_full_batches_in_a_seeded_order_and_drops_the_rest():
    split = Split(
        torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).clone(),
        torch.arange(10),
    )
    loader = BatchLoader(
        split,
        batch_size=4,
        image_size=2,
        mean=[0.0],
        std=[1.0],
        device=torch.device("cpu"),
        shuffle=True,
        seed=1,
    )
    assert len(loader) == 2  # 10 images: two full batches of 4; the last 2 wait for next epoch
    batches = [labels for _, labels in loader]
    assert [len(b) for b in batches] == [4, 4]
    epoch1 = torch.cat(batches)
    epoch2 = torch.cat([labels for _, labels in loader])
    assert len(set(epoch1.tolist())) == 8 and not torch.equal(epoch1, epoch2)
    evaluation = BatchLoader(
        split, batch_size=4, image_size=2, mean=[0.0], std=[1.0], device=torch.device("cpu")
    )
    assert torch.cat([labels for _, labels in evaluation]).tolist() == list(range(10))
    for images, labels in loader:  # images and labels stay paired
        torch.testing.assert_close(images[:, 0, 0, 0] * 255, labels.float())
    replay = BatchLoader(
        split,
        batch_size=4,
        image_size=2,
        mean=[0.0],
        std=[1.0],
        device=torch.device("cpu"),
        shuffle=True,
        seed=1,
    )
    assert torch.equal(torch.cat([labels for _, labels in replay]), epoch1)


def test_unknown_source_is_refused():
    cfg = compose_config(["dataset.source=imagenet"])
    with pytest.raises(ConfigError, match="dataset.source='imagenet' is not known"):
        load_dataset(cfg.dataset)
