"""The first hour of a new user: a fresh clone, then the README's quick start as real processes,
in order (train, predict on the shipped example images, list the runs), and the command that
writes example images of any dataset."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from src.data import examples
from tests.conftest import ROOT, compose_config

README = ROOT / "README.md"
# The README's `python train.py` trains 80 epochs (about 40 s); the quick start also shows the
# short run, which is what this test runs so that the whole hour takes about 20 s.
SHORT_RUN = "trainer.epochs=2"
HYDRA_ERRORS = ("Error executing job", "HYDRA_FULL_ERROR", "Traceback", "Could not override")


def quick_start() -> list[str]:
    """The commands of the README's quick start, in order, without their comments."""
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "the README's quick start has no bash block"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def fresh_clone(target: Path) -> Path:
    """The tracked files (`git ls-files`), as a clone would have them, in ``target``."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"no git checkout to clone from ({err})")
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def run(clone: Path, command: str) -> subprocess.CompletedProcess:
    """A quick-start line as the shell would run it: `python` is this interpreter; stdout and
    stderr go to pipes, as when redirected to a file."""
    words = command.split()
    assert words[0] == "python", command
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the clone's own files, not the project's
    done = subprocess.run(
        [sys.executable, *words[1:]],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{output}"
    assert "\r" not in output, f"{command}: carriage returns in redirected output"
    assert not [e for e in HYDRA_ERRORS if e in output], f"{command}:\n{output}"
    return done


@pytest.mark.slow
def test_the_readme_quick_start_works_in_a_fresh_clone(tmp_path):
    commands = quick_start()
    setup, train, predict, listing = commands[:2], commands[2], commands[3], commands[4]
    assert all("venv" in line or "pip install" in line for line in setup), setup
    assert train == "python train.py"
    assert predict == "python inference.py --run latest --images examples/digits"
    assert listing == "python inference.py --list"
    assert f"python train.py {SHORT_RUN}" in README.read_text()  # the README shows the short run

    clone = fresh_clone(tmp_path / "vit-workbench")
    shipped = sorted(p.name for p in (clone / "examples" / "digits").glob("*.png"))
    assert len(shipped) == 10

    trained = run(clone, f"{train} {SHORT_RUN}")
    (folder,) = [p.parent for p in (clone / "outputs").glob("*/*/summary.json")]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    assert str(folder.relative_to(clone)) in trained.stdout + trained.stderr

    predicted = run(clone, predict)
    run_named = f"--run latest: {folder.relative_to(clone)} (vit_digits on digits"
    assert predicted.stderr.startswith(run_named), predicted.stderr  # which run it took
    lines = predicted.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"examples/digits/{n}" for n in shipped]
    assert all(re.fullmatch(r"examples/digits/\S+: (\d \d+\.\d%(, )?){3}", x) for x in lines)

    listed = run(clone, listing).stdout
    assert str(folder.relative_to(clone)) in listed and "completed" in listed


def test_the_shipped_examples_are_what_the_command_writes(tmp_path, capsys):
    assert examples.main(["--out", str(tmp_path), "--count", "10"]) == 0
    assert "wrote 10 test images of digits" in capsys.readouterr().out
    written = sorted(tmp_path.glob("*.png"))
    shipped = sorted((ROOT / "examples" / "digits").glob("*.png"))
    assert [p.name for p in written] == [p.name for p in shipped]
    for ours, theirs in zip(written, shipped):
        assert Image.open(ours).tobytes() == Image.open(theirs).tobytes(), ours.name
    first = examples.first_test_split_images(compose_config().dataset, 4)
    assert [class_name for _, class_name in first] == ["9", "9", "9", "3"]
    assert {p.name for p in written} >= {"9_001.png", "3_004.png"}  # class, then test image number


def test_a_folder_datasets_examples_are_named_by_class_at_their_own_size(tmp_path):
    root = tmp_path / "photos"
    colours = {"tom and jerry": (200, 40, 40), "spike/tyke": (40, 200, 40)}
    for name, colour in colours.items():
        folder = root / name.replace("/", "_")
        folder.mkdir(parents=True)
        for i in range(20):
            Image.new("RGB", (12 + i, 10), colour).save(folder / f"{i}.png")
    cfg = compose_config(["dataset=folder", f"dataset.root={root}"]).dataset
    written = examples.write_examples(cfg, tmp_path / "out", count=3)
    assert len(written) == 3
    for number, path in enumerate(written, start=1):
        assert re.fullmatch(rf"(tom_and_jerry|spike_tyke)_{number:03d}\.png", path.name)
        image = Image.open(path)
        assert image.mode == "RGB" and image.size[1] == 10  # the file's own size, not resized
        expected = colours["tom and jerry" if path.name.startswith("tom") else "spike/tyke"]
        assert image.getpixel((0, 0)) == expected


def test_an_unknown_dataset_or_a_file_as_out_is_one_sentence(tmp_path, capsys):
    assert examples.main(["dataset=nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: dataset=nope: Could not find 'dataset/nope'; choose one of ")
    assert "digits, fashion_mnist" in err and err.count("\n") == 1
    (tmp_path / "file").write_text("")
    assert examples.main(["--out", str(tmp_path / "file")]) == 1
    assert "is a file; give a folder" in capsys.readouterr().err
