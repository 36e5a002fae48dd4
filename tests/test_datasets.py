"""torchvision datasets, image folders and Kaggle: what they read and cache, and how they fail."""

from __future__ import annotations

import json
import logging
import socket
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

import src.data.files
from src.data import FileSplit, Split, load_dataset, make_batches
from src.data.transforms import BatchAugment
from src.errors import ConfigError
from tests.conftest import ROOT, TINY_RUN, compose_config

SHARED_DATA = ROOT.parent / "shared" / "data"
needs_mnist = pytest.mark.skipif(
    not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="needs ../shared/data/MNIST (real MNIST)"
)
needs_cifar = pytest.mark.skipif(
    not (SHARED_DATA / "cifar10-jpeg.tar.gz").is_file(),
    reason="needs ../shared/data/cifar10-jpeg.tar.gz (CIFAR-10 as JPEG folders)",
)


@pytest.fixture
def offline(monkeypatch):
    """No network at all: any attempt to resolve or connect fails at once."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def dataset_config(name: str, *overrides: str):
    return compose_config([f"dataset={name}", "trainer.num_workers=0", *overrides]).dataset


# ---------------------------------------------------------------- torchvision


@needs_mnist
def test_mnist_reads_the_real_files_offline_and_caches_them(offline, tmp_path, monkeypatch):
    import torchvision

    cfg = dataset_config("mnist", f"dataset.root={SHARED_DATA}", f"dataset.cache_dir={tmp_path}")
    data = load_dataset(cfg)
    assert (len(data.train), len(data.val), len(data.test)) == (54_000, 6_000, 10_000)
    assert data.channels == 1 and data.image_size == 28 and len(data.class_names) == 10
    assert np.bincount(data.val.labels.numpy()).min() > 500  # a stratified hold-out, every digit
    official_test = torchvision.datasets.MNIST(str(SHARED_DATA), train=False)
    assert torch.equal(data.test.images[:, 0], official_test.data)
    assert torch.equal(data.test.labels, official_test.targets)
    assert sorted(p.name.split("-")[1] for p in tmp_path.glob("*.safetensors")) == ["test", "train"]

    # The second load is served from the cache: torchvision is not asked again.
    def not_again(*args):
        raise AssertionError("read through torchvision despite the cache")

    monkeypatch.setattr("src.data.torchvision_source._open", not_again)
    again = load_dataset(cfg)
    assert torch.equal(again.train.images, data.train.images)
    assert torch.equal(again.val.labels, data.val.labels)


@pytest.mark.parametrize(
    "name, files",
    [
        ("mnist", "MNIST/raw/ holding train-images-idx3-ubyte"),
        ("cifar10", "cifar-10-batches-py/"),
        ("svhn", "train_32x32.mat"),
        ("caltech101", "caltech101/101_ObjectCategories/"),
    ],
)
def test_a_failed_download_says_which_files_to_put_where(offline, tmp_path, name, files):
    cfg = dataset_config(name, f"dataset.root={tmp_path}")
    with pytest.raises(ConfigError) as err:
        load_dataset(cfg)
    message = str(err.value)
    assert message.startswith(f"dataset={name}: torchvision could not download")
    assert files in message and str(tmp_path) in message and "dataset.root" in message
    assert "\n" not in message


# ---------------------------------------------------------------- folders


def write_image(path, mode="RGB", size=(12, 10), seed=0):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8), "L")
    else:
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
        if mode == "RGBA":
            image.putalpha(128)
        elif mode == "P":
            image = image.convert("P")
    image.save(path)


def make_folder(root, classes=("cat", "dog", "fox"), per_class=10, mode="RGB", ext="png"):
    for c, name in enumerate(classes):
        for i in range(per_class):
            size = (8 + i, 16 - i % 5)  # mixed sizes
            write_image(root / name / f"{i:03d}.{ext}", mode, size, seed=100 * c + i)
    return root


def folder_config(root, *overrides):
    return dataset_config(
        "folder", f"dataset.root={root}", "model.image_size=16", "model.patch_size=4", *overrides
    )


def test_class_folders_are_read_resized_and_split(tmp_path):
    root = make_folder(tmp_path / "pets")
    write_image(root / "cat" / "grey.jpg", "L")  # mixed modes, a nested folder, other extensions
    write_image(root / "dog" / "alpha.png", "RGBA")
    write_image(root / "fox" / "deeper" / "palette.gif", "P")
    data = load_dataset(
        folder_config(root, "dataset.val_fraction=0.2", "dataset.test_fraction=0.2")
    )
    assert data.class_names == ["cat", "dog", "fox"]
    assert data.channels == 3 and data.image_size == 16
    assert isinstance(data.train, Split) and data.train.images.dtype == torch.uint8
    assert len(data.train) + len(data.val) + len(data.test) == 33
    counts = np.bincount(data.test.labels.numpy())
    assert len(counts) == 3 and counts.max() - counts.min() <= 1  # stratified
    assert len(data.mean) == 3 and all(s > 0 for s in data.std)


def test_grey_folders_give_one_channel_and_rgba_is_flattened_onto_white(tmp_path):
    grey = load_dataset(folder_config(make_folder(tmp_path / "grey", mode="L")))
    assert grey.channels == 1

    root = tmp_path / "clear"
    for name in ("a", "b"):
        for i in range(10):
            root.joinpath(name).mkdir(parents=True, exist_ok=True)
            Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(root / name / f"{i}.png")
    data = load_dataset(folder_config(root, "dataset.channels=3", "dataset.test_fraction=0.2"))
    assert int(data.train.images.min()) == 255  # fully transparent black reads as white


def test_train_and_test_folders_are_kept_and_val_is_held_out_of_train(tmp_path):
    root = tmp_path / "split"
    make_folder(root / "train", per_class=10)
    make_folder(root / "test", per_class=4)
    data = load_dataset(folder_config(root, "dataset.val_fraction=0.2"))
    assert len(data.test) == 12 and len(data.val) == 6 and len(data.train) == 24


def test_unreadable_files_are_skipped_with_a_count_or_stop_the_run(tmp_path, caplog):
    root = make_folder(tmp_path / "bad")
    (root / "cat" / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    good = (root / "dog" / "000.png").read_bytes()
    (root / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "fox" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        data = load_dataset(folder_config(root))
    assert len(data.train) + len(data.val) + len(data.test) == 30
    assert "2 of 32 image files" in caplog.text and "could not be read" in caplog.text
    assert "ignored 1 files" in caplog.text  # notes.txt

    with pytest.raises(ConfigError, match=r"2 of 32 image files .* set dataset.bad_images=skip"):
        load_dataset(
            folder_config(root, "dataset.bad_images=error", f"dataset.cache_dir={tmp_path / 'c2'}")
        )
    # A cached decode remembers its unreadable files, so the setting still applies.
    with pytest.raises(ConfigError, match="2 of 32 image files"):
        load_dataset(folder_config(root, "dataset.bad_images=error"))


@pytest.mark.parametrize(
    "arrange, message",
    [
        (lambda r: None, "is not a folder"),
        (lambda r: r.mkdir(), "has no class folders"),
        (lambda r: write_image(r / "loose.png"), "has images but no class folders"),
        (lambda r: (make_folder(r, per_class=3), (r / "empty").mkdir()), "empty has no images"),
        (lambda r: make_folder(r / "inner"), "single class folder, inner/"),
        (
            lambda r: (make_folder(r / "train"), make_folder(r / "extra")),
            "train/ beside other folders (extra)",
        ),
        (lambda r: make_folder(r / "test"), "has test/ but no train/"),
        (
            lambda r: (make_folder(r / "train"), make_folder(r / "test", classes=("cat", "emu"))),
            "class folders that train/ lacks (emu)",
        ),
        (lambda r: make_folder(r, per_class=1), "has a single image"),
        # split folders by other names were taken as two classes, "Test" and "Train"
        (
            lambda r: (make_folder(r / "Train"), make_folder(r / "Test")),
            "has split folders by other names; rename Test/ to test/, Train/ to train/ "
            "(split folders are",
        ),
        (
            lambda r: (make_folder(r / "training"), make_folder(r / "validation")),
            "rename training/ to train/, validation/ to val/",
        ),
        (lambda r: (make_folder(r / "train"), make_folder(r / "valid")), "rename valid/ to val/"),
    ],
)
def test_bad_folders_get_one_sentence_naming_the_folder(tmp_path, arrange, message):
    root = tmp_path / "data"
    arrange(root)
    with pytest.raises(ConfigError) as err:
        load_dataset(folder_config(root))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "dataset.channels=2",
            "dataset.channels=2 is not supported; use auto, 1 (grey) or 3 (RGB).",
        ),
        ("dataset.loader=fast", "dataset.loader='fast' is not known; use auto, memory or stream."),
        (
            "dataset.bad_images=ignore",
            "dataset.bad_images='ignore' is not known; use skip or error.",
        ),
    ],
)
def test_bad_folder_settings_are_named_before_any_file_is_read(tmp_path, override, message):
    with pytest.raises(ConfigError) as err:
        load_dataset(folder_config(tmp_path / "not-even-there", override))
    assert str(err.value) == message


def test_a_root_under_the_home_folder_may_be_written_with_a_tilde(tmp_path, monkeypatch):
    make_folder(tmp_path / "pets")
    monkeypatch.setenv("HOME", str(tmp_path))
    data = load_dataset(folder_config("'~/pets'"))  # Hydra's grammar wants ~ quoted
    assert data.class_names == ["cat", "dog", "fox"]


def test_the_nested_case_says_which_root_to_use(tmp_path):
    make_folder(tmp_path / "download" / "inner")
    with pytest.raises(ConfigError, match=f"set dataset.root={tmp_path / 'download' / 'inner'}"):
        load_dataset(folder_config(tmp_path / "download"))


def test_the_cache_is_reused_and_invalidated_by_a_changed_file(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "pets")
    first = load_dataset(folder_config(root))
    assert len(list((root / ".vit-cache").glob("*.safetensors"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr("src.data.folder.decode_all", no_decoding)
    second = load_dataset(folder_config(root))
    assert torch.equal(first.train.images, second.train.images)

    monkeypatch.undo()
    write_image(root / "cat" / "new.png", seed=7)
    third = load_dataset(folder_config(root))
    assert len(third.train) + len(third.val) + len(third.test) == 31


def test_streamed_batches_equal_in_memory_batches(tmp_path):
    """Same seed, same order, same augmentation: only where decoding happens differs."""
    root = make_folder(tmp_path / "pets", per_class=12)
    memory = load_dataset(folder_config(root, "dataset.loader=memory"))
    streamed = load_dataset(folder_config(root, "dataset.loader=stream"))
    assert isinstance(streamed.train, FileSplit) and isinstance(memory.train, Split)
    assert torch.equal(streamed.train.labels, memory.train.labels)
    np.testing.assert_allclose(streamed.mean, memory.mean, atol=1e-6)

    def batches(data, workers):
        return list(
            make_batches(
                data.train,
                8,
                num_workers=workers,
                image_size=16,
                mean=memory.mean,
                std=memory.std,
                device=torch.device("cpu"),
                shuffle=True,
                augment=BatchAugment(2, True),
                seed=3,
            )
        )

    expected = batches(memory, 0)
    for workers in (0, 2):
        got = batches(streamed, workers)
        assert len(got) == len(expected)
        for (x, y), (x_ref, y_ref) in zip(got, expected):
            assert torch.equal(y, y_ref) and torch.allclose(x, x_ref)


def test_training_on_a_streamed_folder_completes(tmp_path):
    from src.training.run import train

    root = make_folder(tmp_path / "pets", per_class=12)
    cfg = compose_config(
        [
            *TINY_RUN,
            "trainer.epochs=1",
            "trainer.num_workers=0",
            "dataset=folder",
            f"dataset.root={root}",
            "dataset.loader=stream",
        ]
    )
    train(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["classes"] == ["cat", "dog", "fox"]
    assert sum(summary["split_sizes"].values()) == 36


def test_loader_auto_streams_when_the_images_would_not_fit(tmp_path):
    root = make_folder(tmp_path / "pets")
    data = load_dataset(folder_config(root, "dataset.max_memory_mb=0.001"))
    assert isinstance(data.train, FileSplit) and data.channels == 3


def test_a_file_that_goes_bad_mid_training_is_dropped_from_its_batch(tmp_path, caplog):
    root = make_folder(tmp_path / "pets")
    data = load_dataset(folder_config(root, "dataset.loader=stream"))
    data.train.files[0].write_bytes(b"broken after the check")
    loader = make_batches(
        data.train, 64, image_size=16, mean=data.mean, std=data.std, device=torch.device("cpu")
    )
    with caplog.at_level(logging.WARNING):
        ((x, y),) = list(loader)
    assert len(y) == len(data.train) - 1 and "skipped an unreadable image" in caplog.text


def test_with_bad_images_error_a_file_that_goes_bad_stops_the_run(tmp_path):
    root = make_folder(tmp_path / "pets")
    data = load_dataset(folder_config(root, "dataset.loader=stream", "dataset.bad_images=error"))
    data.train.files[0].write_bytes(b"broken after the check")  # or a header that reads, then a cut
    loader = make_batches(
        data.train,
        8,
        image_size=16,
        mean=data.mean,
        std=data.std,
        device=torch.device("cpu"),
        shuffle=True,
        bad_images="error",
    )
    with pytest.raises(
        ConfigError, match=r"an image could not be read \(.*\) and dataset.bad_images=error stops"
    ):
        list(loader)


def test_a_training_batch_keeps_its_size_when_a_file_goes_bad(tmp_path, caplog):
    """Every process must take the same number of equal steps (or DDP hangs), so an unreadable
    file's place goes to another image of the batch; a batch with none readable stops the run."""
    root = make_folder(tmp_path / "pets")
    data = load_dataset(folder_config(root, "dataset.loader=stream"))
    data.train.files[0].write_bytes(b"broken after the check")
    loader = make_batches(
        data.train,
        8,
        image_size=16,
        mean=data.mean,
        std=data.std,
        device=torch.device("cpu"),
        shuffle=True,
    )
    with caplog.at_level(logging.WARNING):
        sizes = [len(y) for _, y in loader]
    assert sizes == [8] * (len(data.train) // 8) and "replaced an unreadable image" in caplog.text
    for path in data.train.files:
        path.write_bytes(b"all broken")
    with pytest.raises(ConfigError, match="every image of a training batch could not be read"):
        list(loader)


@needs_cifar
def test_cifar10_jpeg_folder_uses_its_train_and_test_splits(tmp_path):
    """A slice of the real CIFAR-10 JPEG copy: 30 train and 10 test images per class."""
    root = tmp_path / "cifar10"
    with tarfile.open(SHARED_DATA / "cifar10-jpeg.tar.gz") as tar:
        counts: dict[tuple[str, str], int] = {}
        for member in tar:
            if not member.isfile():
                continue
            split, name = member.name.split("/")[-3:-1]
            if counts.get((split, name), 0) < (30 if split == "train" else 10):
                counts[(split, name)] = counts.get((split, name), 0) + 1
                tar.extract(member, root, filter="data")
    [top] = list(root.iterdir()) if not (root / "train").is_dir() else [root]
    data = load_dataset(dataset_config("folder", f"dataset.root={top}", "model.image_size=32"))
    assert data.class_names == sorted(
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    )
    assert data.channels == 3 and data.image_size == 32
    assert len(data.test) == 100 and len(data.train) + len(data.val) == 300


# ---------------------------------------------------------------- Kaggle


def test_tom_and_jerry_reads_the_kagglehub_download_as_a_folder(tmp_path, monkeypatch):
    download = tmp_path / "kagglehub" / "versions" / "1"
    classes = ("jerry", "tom", "tom_jerry_0", "tom_jerry_1")
    make_folder(download / "tom_and_jerry" / "tom_and_jerry", classes=classes, ext="jpg")
    (download / "ground_truth.csv").write_text("filename,tom,jerry\n")
    asked = []
    monkeypatch.setattr(
        "kagglehub.dataset_download", lambda handle: asked.append(handle) or str(download)
    )

    data = load_dataset(
        dataset_config("tom_and_jerry", "model.image_size=16", "model.patch_size=4")
    )
    assert asked == ["balabaskar/tom-and-jerry-image-classification"]
    assert data.class_names == list(classes) and data.channels == 3
    assert len(data.train) + len(data.val) + len(data.test) == 40


def test_kaggle_without_network_says_how_to_use_a_downloaded_copy(monkeypatch):
    def no_network(handle):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr("kagglehub.dataset_download", no_network)
    with pytest.raises(ConfigError) as err:
        load_dataset(dataset_config("tom_and_jerry"))
    message = str(err.value)
    assert "could not fetch balabaskar/tom-and-jerry-image-classification" in message
    assert "Failed to resolve" in message and "credentials" in message
    assert "dataset=folder dataset.root=<the copy>/tom_and_jerry/tom_and_jerry" in message


def test_decoding_uses_worker_processes(tmp_path, monkeypatch):
    seen = []
    real = src.data.files.DataLoader

    def spy(*args, **kwargs):
        seen.append(kwargs.get("num_workers"))
        return real(*args, **kwargs)

    monkeypatch.setattr(src.data.files, "DataLoader", spy)
    root = make_folder(tmp_path / "pets")
    load_dataset(dataset_config("folder", f"dataset.root={root}", "trainer.num_workers=2"))
    assert seen == [2]


def test_the_input_pipeline_benchmark_prints_rates(tmp_path):
    import subprocess
    import sys

    root = make_folder(tmp_path / "pets", per_class=12)
    out = subprocess.run(
        [
            sys.executable,
            "benchmarks/input_pipeline.py",
            "--images",
            "1024",
            "--repeats",
            "1",
            "--model-steps",
            "2",
            "--batch-size",
            "64",
            "--folder",
            str(root),
            "--workers",
            "0",
            "model=vit_digits",
            "model.image_size=16",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    rates = {
        line.split("  ")[0].strip(): float(line.split()[-2].replace(",", ""))
        for line in out.stdout.splitlines()
        if line.endswith("images/s")
    }
    assert set(rates) == {
        "memory",
        "recipe",
        "per-image (torchvision)",
        "stream (0 workers)",
        "model",
    }
    assert min(rates.values()) > 0
    assert "recipe input / per-image (torchvision) input:" in out.stdout
    assert "memory input / model training:" in out.stdout
