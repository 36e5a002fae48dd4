"""Sweeps through hydra-submitit-launcher: the SLURM launcher's defaults, and a submitit_local sweep
end to end, one of whose jobs gets submitit's signal, stops, is requeued and continues its run."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import CONFIGS, ROOT, TINY_RUN

needs_submitit = pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="needs requirements-sweeps.txt (hydra-submitit-launcher)",
)
TIMING_COLUMNS = ["epoch_seconds", "images_per_second"]


def launcher_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra.launcher


@needs_submitit
@pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")
def test_the_slurm_launcher_defaults_fit_this_project(monkeypatch):
    monkeypatch.setenv("SLURM_PARTITION", "gpu")
    launcher = launcher_config("hydra/launcher=submitit_slurm")
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node) == (1, 1)
    assert launcher.cpus_per_task >= 4 and launcher.mem_gb >= 16 and launcher.timeout_min >= 60
    assert launcher.partition == "gpu"  # from the environment, or hydra.launcher.partition=
    assert (
        launcher.max_num_timeout > 0 and 60 <= launcher.signal_delay_s < launcher.timeout_min * 60
    )
    assert (
        launcher_config("hydra/launcher=submitit_slurm", "hydra.launcher.partition=a100").partition
        == "a100"
    )


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (read from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@needs_submitit
@pytest.mark.slow
def test_a_submitit_sweep_whose_job_is_signalled_continues_it_and_ends_like_an_uninterrupted_run(
    tmp_path,
):
    """Two identical jobs (seed=0,0) run by submitit_local. Job 0 gets SIGUSR2 by hand during its
    second epoch, as SLURM's time limit would send it: its run stops with status interrupted,
    submitit requeues the job, and the requeued job continues the run in the same folder. Both
    end completed with the same metrics (timing aside), and the sweep summary lists both.
    train.py is started from another folder: the jobs still import the project (PYTHONPATH)."""
    sweep = tmp_path / "sweep"
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "--multirun",
            "hydra/launcher=submitit_local",
            f"hydra.sweep.dir={sweep}",
            *TINY_RUN,
            "trainer.epochs=4",
            "trainer.visualize=false",
            "seed=0,0",
        ],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 300
        metrics = sweep / "0" / "metrics.csv"
        while not (metrics.is_file() and len(pd.read_csv(metrics)) == 1):
            assert time.monotonic() < deadline and process.poll() is None, (
                "job 0 never trained an epoch"
            )
            time.sleep(0.1)
        # The job's process is the child of submitit's local controller, whose pid names the
        # job's folder under .submitit/.
        controllers = [
            int(p.name.split("_")[0])
            for p in (sweep / ".submitit").iterdir()
            if p.name.split("_")[0].isdigit()
        ]
        jobs = [pid for c in controllers for pid in _children(c)]
        job_0 = [pid for pid in jobs if _is_job(pid, sweep / "0")]
        assert len(job_0) == 1, f"job 0's process not found among {jobs}"
        os.kill(job_0[0], signal.SIGUSR2)
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output

    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert [r["from_epoch"] for r in summary["resumes"]] in ([1], [2])  # continued, not restarted
    assert "resumes" not in json.loads((sweep / "1" / "summary.json").read_text())
    a, b = (pd.read_csv(sweep / job / "metrics.csv").drop(columns=TIMING_COLUMNS) for job in "01")
    pd.testing.assert_frame_equal(a, b)
    for job in "01":
        assert (sweep / job / "weights" / "best.safetensors").is_file()
    table = pd.read_csv(sweep / "summary.csv")
    assert table["job"].tolist() == [0, 1] and table["status"].tolist() == ["completed"] * 2


def _is_job(pid: int, run: Path) -> bool:
    """Whether process ``pid`` runs the job in folder ``run`` (it has the folder's log open)."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if Path(os.readlink(fd)).parent == run:
                return True
        except OSError:
            continue
    return False
