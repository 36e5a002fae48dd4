"""benchmarks/gpu_suite.py: its CPU dry run end to end (a part cut by the budget, then resumed, and
the report added to), bad input, what it copies for a GPU machine, and the commands it would run
there."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from src.training.checks import check_config
from tests.conftest import ROOT, compose_config

SUITE = ROOT / "benchmarks" / "gpu_suite.py"


@pytest.fixture
def gpu_suite(monkeypatch):
    """The suite as a module (benchmarks/ is no package), to call its functions and move its
    clock."""
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(
        sys.modules, "gpu_suite", module
    )  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def run_suite(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SUITE), *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def part_rows(report: str, section: int) -> dict[str, str]:
    """{part: status} of the table of the report's `section`-th call (1 = the first)."""
    text = report.split("\n## ")[section]
    rows = [
        line.split(" | ")
        for line in text.splitlines()
        if line.startswith("| ") and line[2].isdigit()
    ]
    return {row[1]: row[2] for row in rows}


@pytest.mark.slow
def test_a_dry_run_cut_by_the_budget_resumes_and_the_report_grows(tmp_path, gpu_suite, monkeypatch):
    report = tmp_path / "report.md"
    # The budget runs out the moment the cifar10 stand-in (5 epochs) has saved its first epoch: the
    # clock jumps ahead then, so the cut lands in the same place on a fast or a busy machine.
    real, ahead = time.monotonic, []

    def clock() -> float:
        if not ahead and any(tmp_path.glob("runs/cifar10-*/checkpoints/last.pt")):
            ahead.append(10_000.0)
        return real() + sum(ahead)

    monkeypatch.setattr(gpu_suite, "clock", clock)
    assert gpu_suite.main(["--dry-run", "--budget", "600", "--report", str(report)]) == 0

    first = report.read_text()
    rows = part_rows(first, 1)
    assert list(rows) == [
        "cuda-tests",
        "check-gpu",
        "model-speed-eager",
        "model-speed-compiled",
        "input-pipeline",
        "mnist",
        "cifar10",
    ]
    assert rows["cuda-tests"].startswith("done: ") and "skipped" in rows["cuda-tests"]  # CPU only
    assert rows["check-gpu"] == rows["model-speed-eager"] == rows["input-pipeline"] == "done"
    assert rows["model-speed-compiled"].startswith("skipped: dry run")
    assert rows["mnist"].startswith("skipped: dry run")  # the cifar10 part runs its command
    assert (
        rows["cifar10"].startswith("cut by the budget with epoch ")
        and "resumable" in rows["cifar10"]
    )
    for figure in (
        "trainer.device=auto and trainer.precision=auto pick cpu, fp32",
        "| test acc |",
        "seconds to 90% val acc",
        "train img/s ours",
        "recipe input / per-image",
        "tiny32",
    ):
        assert figure in first
    state = json.loads((tmp_path / "report.state.json").read_text())
    run_dir = tmp_path / state["parts"]["cifar10"]["run_dir"]  # relative: the folder can move
    assert not Path(state["parts"]["cifar10"]["run_dir"]).is_absolute()
    summary = json.loads((run_dir / "summary.json").read_text())
    saved = summary["epochs_completed"]
    assert summary["status"] == "interrupted" and 1 <= saved < 5

    resumed = run_suite("--dry-run", "--resume", "--budget", "300", "--report", str(report))
    assert resumed.returncode == 0, resumed.stderr
    second = report.read_text()
    assert second.startswith(first.rstrip("\n"))  # added to, not started over
    rows = part_rows(second, 2)
    assert rows["cifar10"] == "done" and rows["input-pipeline"] == "done in an earlier call"
    assert f"resume={run_dir}" in second
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 5
    assert summary["resumes"][0]["from_epoch"] == saved


def test_a_part_that_overruns_is_stopped_and_needs_more_time_next_call(
    tmp_path, gpu_suite, monkeypatch
):
    """A hung or badly guessed part must not eat the parts after it, nor be cut again and again."""
    python = sys.executable
    parts = [
        gpu_suite.Part(
            "hangs", 1.0, lambda: [python, "-c", "import time; time.sleep(60)"], needs_hydra=False
        ),
        gpu_suite.Part("after", 1.0, lambda: [python, "-c", "print('ran')"], needs_hydra=False),
    ]
    monkeypatch.setattr(gpu_suite, "plan", lambda args: parts)
    monkeypatch.setattr(gpu_suite, "OVERRUN_SLACK", 0.0)  # stopped at 3 x its 1 s guess
    report = tmp_path / "report.md"
    started = time.monotonic()
    assert gpu_suite.main(["--dry-run", "--budget", "50", "--report", str(report)]) == 0
    assert time.monotonic() - started < 20  # stopped at about 3 s, not at the budget's end

    rows = part_rows(report.read_text(), 1)
    assert rows["hangs"].startswith("stopped after 3 s (its guess was 1 s); --resume runs it again")
    assert rows["after"] == "done"
    needs = json.loads((tmp_path / "report.state.json").read_text())["seconds"]["hangs"]
    assert needs >= 4.5  # 1.5 x the 3 s it ran: a lower bound of what it takes

    assert gpu_suite.main(["--dry-run", "--resume", "--budget", "4", "--report", str(report)]) == 0
    rows = part_rows(report.read_text(), 2)
    assert rows["hangs"].startswith(f"skipped: did not fit (needs about {needs:.0f} s")
    assert rows["after"] == "done in an earlier call"


def test_a_budget_too_small_for_any_part_still_writes_the_report(tmp_path):
    report = tmp_path / "r.md"
    done = run_suite("--dry-run", "--budget", "2", "--report", str(report))
    assert done.returncode == 0, done.stderr
    rows = part_rows(report.read_text(), 1)
    assert len(rows) == 7 and all(
        s.startswith("skipped: did not fit") or s.startswith("skipped: dry run")
        for s in rows.values()
    )


@pytest.mark.parametrize(
    "args, sentence",
    [
        (["--budget", "-5"], "--budget must be a number of seconds above 0 (got -5)"),
        (["--only", "mnits"], "--only mnits: no such part; choose from cuda-tests,"),
        (["--resume", "--report", "{tmp}/none.md"], "--resume: there is no state at"),
    ],
)
def test_bad_input_gets_one_sentence(tmp_path, args, sentence):
    done = run_suite(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert done.returncode != 0 and sentence in done.stderr
    assert "Traceback" not in done.stderr


def test_prepare_copies_wheels_and_data_and_the_suite_unpacks_them(
    tmp_path, gpu_suite, monkeypatch
):
    shared = tmp_path / "shared"
    (shared / "wheels").mkdir(parents=True)
    (shared / "wheels" / "hydra_core-1.3.8-py3-none-any.whl").write_bytes(b"wheel")
    (shared / "data").mkdir()
    for archive, member in (
        ("mnist-raw.tar.gz", "MNIST/raw/t10k-labels-idx1-ubyte"),
        ("cifar10-jpeg.tar.gz", "train/cat/0000.jpg"),
    ):
        (tmp_path / "src" / member).parent.mkdir(parents=True)
        (tmp_path / "src" / member).write_bytes(b"x")
        with tarfile.open(shared / "data" / archive, "w:gz") as tar:
            tar.add(tmp_path / "src" / member.split("/")[0], arcname=member.split("/")[0])

    device = tmp_path / "device"
    copied = gpu_suite.prepare(shared, device)  # gpu_suite_device's, as the suite imports it
    assert sorted(p.relative_to(device).as_posix() for p in copied) == [
        "data/cifar10-jpeg.tar.gz",
        "data/mnist-raw.tar.gz",
        "wheels/hydra_core-1.3.8-py3-none-any.whl",
    ]

    import gpu_suite_device  # beside gpu_suite.py, which put benchmarks/ on sys.path

    monkeypatch.setattr(gpu_suite_device, "DEVICE_DIR", device)
    # unpacked where git does not look
    assert gpu_suite_device.mnist_root(None) == device / "unpacked"
    assert (device / "unpacked" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()
    assert gpu_suite_device.cifar_root(None) == device / "unpacked" / "cifar10-jpeg"
    assert (device / "unpacked" / "cifar10-jpeg" / "train" / "cat" / "0000.jpg").is_file()


def test_the_gpu_commands_compose_into_valid_runs(tmp_path, gpu_suite):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "cifar10-jpeg" / "train").mkdir(parents=True)
    args = gpu_suite.parse_args(["--data", str(tmp_path), "--report", str(tmp_path / "r.md")])
    parts = {part.name: part for part in gpu_suite.plan(args)}
    assert list(parts)[:2] == ["cuda-tests", "check-gpu"]
    assert "tests/test_cuda.py" in parts["cuda-tests"].command()

    mnist = compose_config(parts["mnist"].command()[2:])
    assert mnist.dataset.name == "mnist" and mnist.dataset.root == str(tmp_path)
    assert mnist.dataset.download is False and mnist.trainer.compile is True
    cifar = compose_config(parts["cifar10"].command()[2:])
    assert cifar.dataset.name == "folder" and cifar.dataset.root == str(tmp_path / "cifar10-jpeg")
    assert cifar.model.embed_dim == 384 and cifar.trainer.epochs == 200  # the preset's own settings
    for cfg in (mnist, cifar):
        check_config(cfg)
    speed = parts["model-speed-compiled"].command()
    assert speed[1:4] == ["benchmarks/model_speed.py", "--device", "cuda"] and "--compile" in speed
    assert ["--folder", str(tmp_path / "cifar10-jpeg")] == parts["input-pipeline"].command()[-2:]
