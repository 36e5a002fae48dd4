"""Sweeps through hydra-submitit-launcher: the SLURM launcher's defaults; a submitit_local sweep
end to end, one of whose jobs gets submitit's signal, stops, is requeued and continues its run;
and sweeps and a search on a real one-node SLURM cluster that a fixture starts on this machine
(tests/helpers/slurm_cluster.py), skipped with the reason where SLURM or root is missing."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import CONFIGS, ROOT, TINY_RUN, compose_config
from tests.helpers import slurm_cluster

needs_submitit = pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="needs requirements-sweeps.txt (hydra-submitit-launcher)",
)
TIMING_COLUMNS = ["epoch_seconds", "images_per_second", "run_seconds"]


def launcher_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra.launcher


@needs_submitit
@pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")
def test_the_slurm_launcher_defaults_fit_this_project(monkeypatch):
    monkeypatch.setenv("SLURM_PARTITION", "gpu")
    launcher = launcher_config("hydra/launcher=submitit_slurm")
    assert launcher._target_ == "hydra_plugins.cluster_launchers.launcher.SlurmLauncher"
    # null: fitted at launch to the run and the partition (test_requests_fit_the_run_and_node)
    assert (launcher.gpus_per_node, launcher.cpus_per_task, launcher.mem_gb) == (None,) * 3
    assert launcher.tasks_per_node == 1 and launcher.timeout_min >= 60
    assert launcher.partition == "gpu"  # from the environment, or hydra.launcher.partition=
    assert (
        launcher.max_num_timeout > 0 and 60 <= launcher.signal_delay_s < launcher.timeout_min * 60
    )
    assert (
        launcher_config("hydra/launcher=submitit_slurm", "hydra.launcher.partition=a100").partition
        == "a100"
    )


@needs_submitit
@pytest.mark.parametrize(
    "node, run, asked",
    [
        (None, [], (1, 8, 32)),  # no sinfo: a GPU job, as before
        (None, ["trainer.device=cpu"], (0, 8, 32)),
        ({"cpus": 2, "mem_gb": 3, "gpus": 0}, [], (0, 2, 3)),  # a small CPU node
        ({"cpus": 64, "mem_gb": 500, "gpus": 4}, ["trainer.num_workers=3"], (1, 4, 32)),
    ],
)
def test_requests_fit_the_run_and_node(node, run, asked, monkeypatch):
    from hydra_plugins.cluster_launchers import _slurm

    monkeypatch.setattr(_slurm, "partition_node", lambda partition: node)
    config = compose_config(run)
    params = _slurm.fit({"gpus_per_node": None, "cpus_per_task": None, "mem_gb": None}, config)
    assert (params["gpus_per_node"], params["cpus_per_task"], params["mem_gb"]) == asked
    assert _slurm.fit({"gpus_per_node": 2, "cpus_per_task": 3, "mem_gb": 4}, config) == {
        "gpus_per_node": 2,
        "cpus_per_task": 3,
        "mem_gb": 4,
    }  # what the user set stays


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


# -- a real one-node SLURM cluster ---------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm():
    """munged, slurmctld and slurmd in a temporary folder, on free ports; stopped after the
    module. The node claims 24 CPUs (the machine may have 2), so that three jobs of the
    project's fitted request (8 CPUs) run side by side. (The folder is not under pytest's
    tmp_path, which only root may enter: munged runs as the munge user.)"""
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("needs requirements-sweeps.txt (hydra-submitit-launcher)")
    if reason := slurm_cluster.missing():
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="vit-slurm-"))
    cluster = slurm_cluster.Cluster(folder, cpus=24)
    try:
        try:
            cluster.start()
        except RuntimeError as err:
            pytest.skip(f"a one-node SLURM cluster did not start here: {str(err)[:300]}")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def sweep_on(cluster, sweep: Path, *overrides: str) -> subprocess.Popen:
    """train.py --multirun on the cluster, from the sweep's parent folder."""
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "--multirun",
            "hydra/launcher=submitit_slurm",
            f"hydra.sweep.dir={sweep}",
            *TINY_RUN,
            "trainer.num_workers=0",
            *overrides,
        ],
        cwd=sweep.parent,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**cluster.env, "OMP_NUM_THREADS": "1"},
    )


def slurm_job_of(sweep: Path, job: int) -> str:
    """The SLURM id of a sweep's job (ARRAY_TASK), from submitit's folders."""
    (folder,) = [p for p in (sweep / ".submitit").iterdir() if p.name.endswith(f"_{job}")]
    return folder.name


def trained(sweep: Path, job: int, epochs: int) -> bool:
    metrics = sweep / str(job) / "metrics.csv"
    return metrics.is_file() and len(pd.read_csv(metrics)) >= epochs


@pytest.mark.slow
def test_a_sweep_on_slurm_continues_a_requeued_job_and_the_same_command_a_cancelled_one(
    slurm, tmp_path
):
    """The README's sweep with the launcher's defaults on a CPU-only node. Jobs 0 and 1 are the
    same run; job 0 gets `scancel --signal=USR2` in its second epoch (SLURM's warning before a
    time limit or a preemption): it stops, is requeued and continues its folder, ending equal to
    job 1. Job 2 is cancelled (scancel): the sweep summary says it failed and how, the others
    complete. No sacct warnings (this cluster keeps no accounting), no Hydra schema warning in
    the jobs' stderr, no stray .submitit/%j. Then the same command again (resumable sweeps,
    issue 34) keeps jobs 0 and 1 as they were, and job 2, a new SLURM job in the same folder,
    goes on from its checkpoint."""
    sweep = tmp_path / "sweep"
    # Six epochs of 16-image batches, and job 0 signalled as soon as its first epoch is in: with
    # four quick epochs, and the signal sent only once job 2 had trained one too, a loaded machine
    # let job 0 finish before the signal came.
    epochs = 6
    args = (f"trainer.epochs={epochs}", "trainer.batch_size=16", "seed=0,0,1")
    process = sweep_on(slurm, sweep, *args)
    try:
        deadline = time.monotonic() + 300
        for job, signal_args in ((0, ["--signal=USR2"]), (2, [])):
            while not trained(sweep, job, 1):
                assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
                time.sleep(0.2)
            slurm.run("scancel", *signal_args, slurm_job_of(sweep, job))
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, output  # a job failed, as a sweep says
    assert "sacct" not in output and "Traceback" not in output, output

    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert summary["status"] == "completed", output
    assert [r["from_epoch"] for r in summary["resumes"]] in ([e] for e in range(1, epochs))
    a, b = (pd.read_csv(sweep / job / "metrics.csv").drop(columns=TIMING_COLUMNS) for job in "01")
    pd.testing.assert_frame_equal(a, b)
    table = pd.read_csv(sweep / "summary.csv")
    assert table["status"].tolist() == ["completed", "completed", "failed"]
    assert table["error"][2].startswith(f"SLURM job {slurm_job_of(sweep, 2)} ended CANCELLED")
    for err in (sweep / ".submitit").glob("*/*.err"):
        assert "ConfigStore schema" not in err.read_text(), err
    assert not (sweep / ".submitit" / "%j").exists()
    continue_the_cancelled_job(slurm, sweep, args, job=2, epochs=epochs)


def continue_the_cancelled_job(cluster, sweep: Path, args: tuple[str, ...], job: int, epochs: int):
    """The sweep's command again: the completed jobs' files are not touched, and ``job`` goes on
    from its checkpoint to the end."""
    others = [p for p in sweep.iterdir() if p.name.isdigit() and p.name != str(job)]
    kept = {
        p / name: (p / name).stat().st_mtime_ns
        for p in others
        for name in ("metrics.csv", "summary.json")
    }
    again = sweep_on(cluster, sweep, *args)
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    assert {path: path.stat().st_mtime_ns for path in kept} == kept
    summary = json.loads((sweep / str(job) / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == epochs
    assert [r["from_epoch"] for r in summary["resumes"]] in ([e] for e in range(1, epochs))
    assert pd.read_csv(sweep / str(job) / "metrics.csv")["epoch"].tolist() == list(
        range(1, epochs + 1)
    )
    assert pd.read_csv(sweep / "summary.csv")["status"].tolist() == ["completed"] * (
        len(others) + 1
    )


@pytest.mark.slow
def test_a_request_the_cluster_refuses_or_cannot_start_is_one_sentence(slurm, tmp_path):
    """sbatch's refusal (GPUs on a node without any) and a job that would pend forever
    (Reason=PartitionConfig: the defaults' 4 hours on a 1-minute partition) each end the
    sweep in one sentence naming the setting; the pending one's jobs are cancelled."""
    gpus = sweep_on(slurm, tmp_path / "gpus", "hydra.launcher.gpus_per_node=1", "seed=0,1")
    output, _ = gpus.communicate(timeout=120)
    assert gpus.returncode == 1 and "Traceback" not in output, output
    assert (
        "sbatch refused the sweep's jobs (Invalid generic resource (gres) specification): set "
        "hydra.launcher.gpus_per_node=0 to run without GPUs" in output
    ), output

    short = sweep_on(slurm, tmp_path / "short", "hydra.launcher.partition=short", "seed=0,1")
    output, _ = short.communicate(timeout=120)
    assert short.returncode == 1 and "Traceback" not in output, output
    assert "cannot start (Reason=PartitionConfig): it asks for more than the partition " in output
    assert (
        "timeout_min lower, or choose another hydra.launcher.partition; the sweep's jobs were "
        "cancelled." in output
    )
    assert slurm.run("squeue", "-h", "-p", "short").strip() == ""


@pytest.mark.slow
def test_an_optuna_search_runs_its_trials_as_slurm_jobs(slurm, tmp_path):
    """Two trials at a time, each a SLURM job, told to the study in the sweep folder."""
    import optuna

    sweep = tmp_path / "search"
    process = sweep_on(
        slurm,
        sweep,
        "+hparams_search=optuna",
        "trainer.epochs=1",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
    )
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    study = optuna.load_study(study_name="vit", storage=f"sqlite:///{sweep}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:
        run = json.loads((sweep / str(trial.number) / "summary.json").read_text())
        assert run["status"] == "completed" and trial.value == run["best_val_acc"]
    assert len(list((sweep / ".submitit").glob("*_[01]"))) == 2  # one array of two SLURM jobs
