"""What a GPU machine without internet or Hydra needs for the GPU suite, and where it finds it.

Here, --prepare copies Hydra's wheels and the data archives into .device/ (git-ignored), which
goes to the GPU machine with the code; there, the suite installs the wheels for its commands when
Hydra is missing and unpacks the archives. Standard library only.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE_DIR = ROOT / ".device"  # git-ignored: what travels to a GPU machine beside the code
SHARED = ROOT.parent / "shared"  # wheels/ and data/ of this workplace
ARCHIVES = ("mnist-raw.tar.gz", "cifar10-jpeg.tar.gz")


def data_dirs(data: Path | None) -> list[Path]:
    return [data] if data else [DEVICE_DIR / "data", SHARED / "data"]


def unpack(archive: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # newer Pythons: refuse links and paths out of `into`
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)


def mnist_root(data: Path | None) -> Path | None:
    """A root holding MNIST/raw/, unpacking mnist-raw.tar.gz into .device/unpacked/ if need be."""
    for folder in data_dirs(data):
        if (folder / "MNIST" / "raw").is_dir():
            return folder
        if (folder / ARCHIVES[0]).is_file():
            into = DEVICE_DIR / "unpacked"
            if not (into / "MNIST" / "raw").is_dir():
                unpack(folder / ARCHIVES[0], into)
            return into
    return None


def cifar_root(data: Path | None) -> Path | None:
    """The CIFAR-10 JPEG copy's folder (train/, test/), unpacking its archive if need be."""
    for folder in data_dirs(data):
        if (folder / "cifar10-jpeg" / "train").is_dir():
            return folder / "cifar10-jpeg"
        if (folder / ARCHIVES[1]).is_file():
            into = DEVICE_DIR / "unpacked" / "cifar10-jpeg"
            if not (into / "train").is_dir():
                unpack(folder / ARCHIVES[1], into)
            return into
    return None


def child_env() -> tuple[dict[str, str], str | None]:
    """The environment of the commands, and why Hydra is missing (None when it is there).
    Without Hydra, the wheels in .device/wheels are installed into .device/site for them."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if importlib.util.find_spec("hydra") is not None:
        return env, None
    wheels = sorted((DEVICE_DIR / "wheels").glob("*.whl"))
    if not wheels:
        return (
            env,
            "Hydra is not installed and .device/wheels holds no wheels "
            "(run --prepare where they are)",
        )
    site = DEVICE_DIR / "site"
    if not (site / "hydra").is_dir():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--no-deps",
                "--target",
                str(site),
                *map(str, wheels),
            ],
            check=True,
        )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env, None


def prepare(shared: Path, dest: Path = DEVICE_DIR) -> list[Path]:
    """Copies the wheels and the data archives into `dest` (git-ignored), to travel with the
    code."""
    copies = [(w, dest / "wheels" / w.name) for w in sorted((shared / "wheels").glob("*.whl"))]
    copies += [
        (shared / "data" / a, dest / "data" / a)
        for a in ARCHIVES
        if (shared / "data" / a).is_file()
    ]
    if not copies:
        raise SystemExit(
            f"--prepare: found no wheels/*.whl nor data archives under {shared}; pass --shared DIR."
        )
    for source, target in copies:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return [target for _, target in copies]
