"""One process per run folder (issue 21, 5b): a live holder refuses a second process with one
sentence naming it; a dead one (kill -9 included) leaves nothing behind; under torchrun, rank 0
holds the folder for the whole job."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.contract import RunPaths
from src.errors import ConfigError
from src.runs import lock as runlock
from src.training.run import train
from tests.conftest import ROOT, TINY_RUN, compose_config

QUICK = [*TINY_RUN, "trainer.visualize=false"]
HOLD = (
    "import sys, time; from src.runs import lock; lock.acquire(sys.argv[1]); "
    "print('held', flush=True); time.sleep(600)"
)


def hold_in_another_process(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p != RunPaths(folder).lock
    }


def busy(folder: Path, pid: int) -> str:
    return f"{folder.resolve()} is in use: process {pid} on {socket.gethostname()} (since "


def test_a_folder_held_by_a_live_process_is_refused_with_its_process_and_host(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)  # the holder's run, as far as this test goes
    for name in ("summary.json", "metrics.csv", "checkpoints/last.pt"):
        (run_dir / name).write_text(f"the holder's {name}")
    before = files(run_dir)
    holder = hold_in_another_process(run_dir)
    try:
        for cfg in (QUICK + [f"resume={run_dir}"], QUICK):  # a resume; a new run in its folder
            with pytest.raises(ConfigError) as err:
                train(compose_config(cfg), run_dir)
            assert str(err.value).startswith(busy(run_dir, holder.pid)), err.value
            assert f"then resume with: python train.py resume={run_dir.resolve()}" in str(err.value)
        assert files(run_dir) == before  # nothing of the holder's run was touched
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_killed_with_sigkill_leaves_the_folder_free(tmp_path):
    run_dir = tmp_path / "run"
    holder = hold_in_another_process(run_dir)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert RunPaths(run_dir).lock.exists()  # the file stays; the OS's lock went with it
    train(compose_config(QUICK + ["trainer.epochs=1"]), run_dir)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert not RunPaths(run_dir).lock.exists()  # given back at the end


def test_the_lock_is_taken_again_for_free_by_its_holder(tmp_path):
    runlock.acquire(tmp_path)
    runlock.acquire(tmp_path)  # the Hydra callback's, then train()'s
    runlock.release(tmp_path)
    assert RunPaths(tmp_path).lock.exists()
    runlock.release(tmp_path)
    assert not RunPaths(tmp_path).lock.exists()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def wait_for(condition, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
def test_the_command_line_refuses_a_running_run_and_resumes_it_once_killed(tmp_path):
    """The issue's case: a run resumed (or started again in its folder) while it trains. Both
    exited 0 before, writing into one folder."""
    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "train.py", f"hydra.run.dir={run_dir}", *QUICK, "trainer.epochs=1000"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (run_dir / "checkpoints" / "last.pt").exists())
        first.send_signal(signal.SIGSTOP)  # it holds the folder still, and leaves the CPU to these
        hydra_before = files(run_dir / ".hydra")
        for args in (
            [f"resume={run_dir}", "trainer.epochs=1005"],
            [f"hydra.run.dir={run_dir}", *QUICK, "model.depth=2"],
        ):
            refused = run_cli(*args)
            assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
            assert busy(run_dir, first.pid) in refused.stderr
        assert files(run_dir / ".hydra") == hydra_before  # Hydra wrote nothing of the second's
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    epoch = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    resumed = run_cli(f"resume={run_dir}", f"trainer.epochs={epoch + 1}")
    assert resumed.returncode == 0, resumed.stderr
    assert not RunPaths(run_dir).lock.exists()


@pytest.mark.slow
def test_under_torchrun_rank_0_holds_the_folder_for_the_whole_job(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "train.py",
            f"hydra.run.dir={run_dir}",
            *QUICK,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lock = RunPaths(run_dir).lock
    wait_for(lambda: job.poll() is not None or (lock.exists() and lock.read_text().strip()))
    holder = json.loads(lock.read_text())
    environ = Path(f"/proc/{holder['pid']}/environ").read_bytes().split(b"\0")
    assert b"RANK=0" in environ and b"LOCAL_RANK=0" in environ  # a worker, rank 0, not torchrun
    with pytest.raises(ConfigError) as err:  # a single process on the same folder, meanwhile
        train(compose_config(QUICK + [f"resume={run_dir}"]), run_dir)
    output, _ = job.communicate(timeout=300)
    assert job.returncode == 0, output
    assert str(err.value).startswith(busy(run_dir, holder["pid"]))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["processes"] == 2
    assert not lock.exists()
