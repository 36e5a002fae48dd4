"""Memory that scales with the data: statistics in chunks, decoded files written into one tensor,
datasets too large for dataset.max_memory_mb streamed, and caches that notice changed files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tv

import src.data.files
from src.data import FileSplit, Split, channel_stats, load_dataset, make_batches
from src.data.files import ImageFiles, decode_all
from tests.conftest import ROOT, compose_config
from tests.test_datasets import folder_config, make_folder, write_image


def peak_extra_mb(code: str, setup: str) -> float:
    """Peak resident memory added by ``code`` after ``setup``, in a fresh Python process."""
    script = textwrap.dedent(f"""
        import resource
        {setup}
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        {code}
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return float(out.stdout.split()[-1])


@pytest.mark.parametrize("shape", [(300, 1, 8, 8), (64, 3, 9, 7)])
def test_channel_stats_equal_the_float_formula(shape):
    images = torch.randint(
        0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    x = images.double().div(255).transpose(0, 1).flatten(1)
    mean, std = channel_stats(images)
    torch.testing.assert_close(
        torch.tensor(mean, dtype=torch.float64), x.mean(dim=1), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        torch.tensor(std, dtype=torch.float64), x.std(dim=1), rtol=0, atol=1e-12
    )


def test_channel_stats_make_no_float_copy_of_the_images():
    """128 MB of uint8 images: a float copy alone would add 512 MB (the old code made two)."""
    setup = (
        "import torch; from src.data import channel_stats; "
        "images = torch.full((43_690, 3, 32, 32), 7, dtype=torch.uint8); images[::2] = 200"
    )
    extra = peak_extra_mb("mean, std = channel_stats(images)", setup)
    assert extra < 80, f"channel_stats added {extra:.0f} MB for 128 MB of images"


def test_decoding_files_holds_the_images_once():
    """16,000 decoded images of 192 MB: gathering the batches and joining them held them twice."""
    setup = textwrap.dedent("""
        import torch
        from pathlib import Path
        import src.data.files as files
        def decode_image(path, channels):  # a fresh image each call, as decoding makes
            return torch.full((3, 64, 64), 9, dtype=torch.uint8), False
        files.decode_image = decode_image
        labels = torch.zeros(16_000, dtype=torch.long)
        listed = files.ImageFiles([Path("x.png")] * 16_000, labels, 3, 64)
    """).replace("\n", "\n        ")
    extra = peak_extra_mb("decoded = files.decode_all(listed, 0, 'decoding')", setup)
    assert extra < 1.5 * 192, f"decoding 192 MB of images added {extra:.0f} MB"


# ------------------------------------------------- torchvision datasets decoded from image files


def fake_gtsrb(root: Path, count: int = 30) -> tv.GTSRB:
    """A torchvision GTSRB object over PNG files of three classes, made without a download."""
    dataset = tv.GTSRB.__new__(tv.GTSRB)
    dataset._samples = []
    for i in range(count):
        path = root / "gtsrb" / "GTSRB" / "Training" / f"{i % 3:05d}" / f"{i:03d}.png"
        write_image(path, size=(10 + i % 7, 12), seed=i)
        dataset._samples.append((str(path), i % 3))
    dataset.transform = dataset.target_transform = None
    return dataset


@pytest.fixture
def gtsrb(tmp_path, monkeypatch):
    """dataset=gtsrb over a fake GTSRB; ``opened`` counts how often torchvision was asked."""
    opened = []
    dataset = fake_gtsrb(tmp_path)
    monkeypatch.setattr(
        "src.data.torchvision_source._open", lambda *args: opened.append(1) or dataset
    )

    def load(*overrides):
        return load_dataset(
            compose_config(
                [
                    "dataset=gtsrb",
                    f"dataset.root={tmp_path}",
                    "dataset.splits.test=null",
                    "dataset.test_fraction=0.2",
                    "dataset.val_fraction=0.2",
                    "trainer.num_workers=0",
                    *overrides,
                ]
            ).dataset
        )

    return load, opened, dataset


def test_image_file_datasets_over_max_memory_mb_are_streamed(gtsrb):
    load, _, dataset = gtsrb
    data = load("dataset.max_memory_mb=0.01")  # 30 images of 3x32x32 are 0.09 MB
    assert isinstance(data.train, FileSplit) and data.image_size == 32 and data.channels == 3
    assert len(data.train) + len(data.val) + len(data.test) == 30 and len(data.mean) == 3
    (x, y), *_ = make_batches(
        data.train,
        4,
        image_size=32,
        mean=data.mean,
        std=data.std,
        device=torch.device("cpu"),
        shuffle=True,
    )
    assert x.shape == (4, 3, 32, 32)

    held = load()  # they fit the default 2048 MB: decoded into memory, the same images
    assert isinstance(held.train, Split)
    decoded = decode_all(ImageFiles.of(data.train), 0, "decoding")
    assert torch.equal(decoded.images, held.train.images)
    np.testing.assert_allclose(data.mean, held.mean, atol=1e-6)


def test_the_torchvision_cache_is_named_by_the_files(gtsrb):
    load, opened, dataset = gtsrb
    first = load()
    load()
    assert len(opened) == 1  # the second load read the cache
    path, label = dataset._samples[0]
    write_image(Path(path), size=(20, 20), seed=99)  # a file rewritten: the cache no longer holds
    third = load()
    everything = [torch.cat([d.train.images, d.val.images, d.test.images]) for d in (first, third)]
    assert len(opened) == 2 and not torch.equal(*everything)


# ------------------------------------------------- streamed folders


def test_a_streamed_folder_keeps_its_index(tmp_path, monkeypatch):
    """The header scan of a streamed folder is kept beside the data: a restart opens no file."""
    opened = []
    real = src.data.files.is_grey_file
    monkeypatch.setattr(
        src.data.files, "is_grey_file", lambda path: opened.append(path) or real(path)
    )
    root = make_folder(tmp_path / "pets")
    (root / "dog" / "broken.png").write_bytes(b"not an image")
    first = load_dataset(folder_config(root, "dataset.loader=stream"))
    assert len(opened) == 31
    again = load_dataset(folder_config(root, "dataset.loader=stream"))
    assert len(opened) == 31  # not one header read again
    assert again.train.files == first.train.files and torch.equal(
        again.test.labels, first.test.labels
    )
    write_image(root / "cat" / "new.png", seed=5)
    load_dataset(folder_config(root, "dataset.loader=stream"))
    assert len(opened) == 31 + 32  # a new file: the folder is scanned again


# ------------------------------------------------- the web page


def test_the_web_page_decodes_only_the_test_images_it_shows(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from omegaconf import OmegaConf

    import src.data.images
    from src.runs.catalogue import Run
    from src.web.workbench import first_test_images

    root = make_folder(tmp_path / "pets", per_class=40)
    settings = [
        "dataset=folder",
        f"dataset.root={root}",
        "model.image_size=16",
        "model.patch_size=4",
        "trainer.num_workers=0",
    ]
    cfg = compose_config(settings)
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, tmp_path / "run" / ".hydra" / "config.yaml")
    # As training split it (cached elsewhere, so the page finds no decoded images to read).
    expected = load_dataset(
        compose_config([*settings, f"dataset.cache_dir={tmp_path}/c"]).dataset
    ).test

    opened = []
    real = src.data.images.Image.open
    monkeypatch.setattr(
        src.data.images.Image, "open", lambda path, *a: opened.append(path) or real(path, *a)
    )
    shown = first_test_images(Run.read(tmp_path / "run"), count=8)
    assert len(opened) == 8  # not the 120 images of the folder
    assert [label for _, label in shown] == [["cat", "dog", "fox"][i] for i in expected.labels[:8]]
    assert all(image.dtype == torch.uint8 and image.shape[0] == 3 for image, _ in shown)


@pytest.mark.slow
def test_the_memory_benchmark_prints_peak_rss_against_the_data(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=12)
    out = subprocess.run(
        [
            sys.executable,
            "benchmarks/memory.py",
            "--folder",
            str(root),
            "--image-size",
            "16",
            "--batches",
            "2",
            "--batch-size",
            "8",
            "--workers",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "peak RSS" in line]
    assert [line.split()[0] for line in lines] == ["memory-decode", "memory-cached", "stream"]
    assert all("MB of data" in line for line in lines)
