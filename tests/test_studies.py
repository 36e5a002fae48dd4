"""Optuna studies that outlive a process and are shared by many: SQLite in the sweep folder,
PostgreSQL for several processes, a killed process's trial retried, hopeless trials pruned."""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, TINY_RUN, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("optuna") is None, reason="needs requirements-sweeps.txt (optuna)"
    ),
]

SEARCH = [
    "--multirun",
    "+hparams_search=optuna",
    *TINY_RUN,
    "trainer.visualize=false",
    "trainer.epochs=1",
]


def start(*args: str) -> subprocess.Popen:
    # One thread each: several searches share the machine's cores.
    return subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def load(storage: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage)


def wait_for(condition, timeout: float = 300, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(every)
    raise TimeoutError("the condition was not met in time")


def running_jobs(sweep: Path) -> list[Path]:
    """Job folders of a sweep whose run has started training (status running)."""
    out = []
    for summary in sweep.glob("*/summary.json"):
        try:
            if json.loads(summary.read_text()).get("status") == "running":
                out.append(summary.parent)
        except ValueError:  # being written
            pass
    return out


def counted(study) -> list:
    """The trials that count toward n_trials (not replaced by a retry, not surplus)."""
    trials = study.get_trials()
    gone = {t.number for t in trials if "surplus" in t.user_attrs}
    for t in trials:
        gone.update(t.system_attrs.get("retry_history", []))
    return [t for t in trials if t.number not in gone]


# -- SQLite in the sweep folder ------------------------------------------------------------------


def test_a_stopped_search_goes_on_from_its_sqlite_study_without_starting_over(tmp_path):
    """SIGTERM in the second trial: that run ends interrupted, its trial is told FAIL and queued
    again, and the search stops naming the command that continues it; that command runs the
    queued trial and the third, never the first again."""
    sweep = tmp_path / "sweep"
    args = [*SEARCH, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}"]
    first = start(*args, "trainer.epochs=4")  # trials long enough to be stopped in
    wait_for(lambda: running_jobs(sweep) == [sweep / "1"])
    first.send_signal(signal.SIGTERM)
    code, err = finish(first)
    assert code != 0
    assert "trial 1 was interrupted and is queued again" in err
    # One sentence: no traceback, no warning, not the run's own "resume with" (the search goes on)
    assert "Traceback" not in err and "Warning" not in err and "resume=" not in err, err
    assert f"hydra.sweep.dir={sweep}" in err and "hydra.sweeper.study_name=vit" in err
    storage = f"sqlite:///{sweep}/optuna.db"
    assert json.loads((sweep / "1" / "summary.json").read_text())["status"] == "interrupted"
    started_0 = json.loads((sweep / "0" / "summary.json").read_text())["started_at"]

    # The same command with the sweep folder (whose optuna.db is the default storage); one epoch
    # a trial, so the test is quick (trainer.epochs is not searched).
    code, err = finish(start(*args))
    assert code == 0, err
    study = load(storage, "vit")
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE", 3: "COMPLETE"}
    retry = study.trials[2]
    assert retry.params == study.trials[1].params  # trial 1 again, as trial 2
    assert len(counted(study)) == 3
    assert json.loads((sweep / "0" / "summary.json").read_text())["started_at"] == started_0
    table = pd.read_csv(sweep / "summary.csv")
    assert table["job"].tolist() == [0, 1, 2, 3]
    assert table["status"].tolist() == ["completed", "interrupted", "completed", "completed"]


def test_a_signal_as_a_trial_starts_stops_the_search_with_its_sentence_and_no_trial_running(
    tmp_path,
):
    """SIGTERM at the moment trial 0's job starts (before its run has its own handlers; it
    killed the search with exit 143 and left the trial RUNNING): the search stops with its
    sentence, trial 0 is told FAIL and queued again, and the same command runs it."""
    sweep = tmp_path / "sweep"
    args = [*SEARCH, "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={sweep}"]
    stopped = subprocess.run(
        [
            sys.executable,
            "tests/helpers/signalled_train.py",
            "src.training.run:run_job",
            "SIGTERM",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert stopped.returncode == 1, stopped.stderr
    assert (
        f"trial 0 was interrupted and is queued again; continue the search with the same "
        f"command plus hydra.sweep.dir={sweep} hydra.sweeper.storage=sqlite:///{sweep}/optuna.db"
        " hydra.sweeper.study_name=vit"
    ) in stopped.stderr.splitlines()
    assert "Traceback" not in stopped.stderr, stopped.stderr
    storage = f"sqlite:///{sweep}/optuna.db"
    assert [t.state.name for t in load(storage, "vit").trials] == ["FAIL", "WAITING"]

    code, err = finish(start(*args))
    assert code == 0, err
    trials = load(storage, "vit").trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].params == trials[0].params


def test_a_complete_study_continued_from_another_folder_says_so_and_writes_its_results(tmp_path):
    """A study that holds its n_trials trials (made here with Optuna's API, as another machine
    would have), continued from a new sweep folder: nothing runs, the command says so and names
    the best trial, and the folder gets the study's results (it was a FileNotFoundError)."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'a' / 'optuna.db'}"
    (tmp_path / "a").mkdir()
    study = optuna.create_study(study_name="vit", storage=storage, direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-4, 3e-3, log=True)
    for value, rate in ((0.5, 1e-3), (0.75, 2e-3)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"optimizer.lr": rate}, distributions={"optimizer.lr": lr}, value=value
            )
        )
    sweep = tmp_path / "b"
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            *SEARCH,
            "hydra.sweeper.n_trials=2",
            f"hydra.sweeper.storage={storage}",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "The study already holds its 2 trials: nothing to run" in result.stdout
    assert "Best trial 1: {'optimizer.lr': 0.002} -> 0.75" in result.stdout
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_trial"] == 1 and results["trials"]["complete"] == 2
    assert pd.read_csv(sweep / "trials.csv")["value"].tolist() == [0.5, 0.75]
    assert not [p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()]  # no trial ran


def test_hopeless_trials_are_pruned_from_their_per_epoch_validation_accuracy(tmp_path):
    """An lr of 1e-9 never leaves chance (10% of the digits): the threshold pruner stops such
    trials after their second epoch; trials with a real lr train to their last epoch."""
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            *SEARCH,
            "trainer.epochs=3",
            "scheduler=constant",
            "optimizer.lr=choice(3e-3,1e-9)",
            "hydra/sweeper/pruner=threshold",
            "hydra.sweeper.pruner.lower=0.12",
            "hydra.sweeper.pruner.n_warmup_steps=2",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.sampler.seed=2",
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    study = load(f"sqlite:///{tmp_path}/optuna.db", "vit")
    table = pd.read_csv(tmp_path / "summary.csv").set_index("job")
    lrs = {t.number: t.params["optimizer.lr"] for t in study.trials}
    assert set(lrs.values()) == {3e-3, 1e-9}  # this seed draws both
    for trial in study.trials:
        hopeless = lrs[trial.number] == 1e-9
        assert trial.state.name == ("PRUNED" if hopeless else "COMPLETE")
        assert table.loc[trial.number, "status"] == ("pruned" if hopeless else "completed")
        assert table.loc[trial.number, "epochs"] == (2 if hopeless else 3)
        assert sorted(trial.intermediate_values) == ([1, 2] if hopeless else [1, 2, 3])
        if hopeless:
            error = json.loads((tmp_path / str(trial.number) / "summary.json").read_text())["error"]
            assert error.startswith(
                "pruned by the study's ThresholdPruner after epoch 2, at best "
                "validation accuracy 0.1"
            ), error


# -- PostgreSQL, several processes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1 in a temporary folder, run as the postgres user when the
    tests run as root (its tools refuse root); stopped and removed even when a test fails."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("needs PostgreSQL's initdb and pg_ctl on the PATH")
    as_root = os.geteuid() == 0
    if as_root:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("PostgreSQL refuses to run as root, and there is no postgres user")
    pytest.importorskip("psycopg", reason="needs psycopg[binary] (requirements-sweeps.txt)")
    folder = Path(tempfile.mkdtemp(prefix="vit-pg-"))
    folder.chmod(0o777)
    port = free_port()

    def pg(command: str) -> None:
        argv = ["su", "postgres", "-c", command] if as_root else ["bash", "-c", command]
        subprocess.run(argv, check=True, capture_output=True, timeout=120)

    data = folder / "data"
    try:
        pg(f"initdb -D {data} -A trust -U postgres")
        pg(
            f"pg_ctl -D {data} -l {folder}/log -w -o '-p {port} -k {folder} "
            f"-c listen_addresses=127.0.0.1' start"
        )
        pg(f"createdb -h 127.0.0.1 -p {port} -U postgres optuna")
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        if (data / "postmaster.pid").exists():
            pg(f"pg_ctl -D {data} -m immediate -w stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_two_processes_finish_one_study_between_them(postgres, tmp_path):
    """Two searches on one PostgreSQL study and one sweep folder: 4 trials in all, each run once,
    in its own folder named by its trial number."""
    sweep = tmp_path / "sweep"
    args = [
        *SEARCH,
        f"hydra.sweeper.storage={postgres}",
        "hydra.sweeper.study_name=shared",
        "hydra.sweeper.n_trials=4",
        f"hydra.sweep.dir={sweep}",
    ]
    processes = [start(*args), start(*args)]
    for process in processes:
        code, err = finish(process)
        assert code == 0, err
    study = load(postgres, "shared")
    assert [t.state.name for t in counted(study)] == ["COMPLETE"] * 4
    runs = [
        json.loads((sweep / str(t.number) / "summary.json").read_text()) for t in counted(study)
    ]
    assert [r["status"] for r in runs] == ["completed"] * 4
    assert len({tuple(sorted(r["overrides"])) for r in runs}) == 4  # each trial ran once
    for trial, run in zip(counted(study), runs):
        assert trial.value == run["best_val_acc"]
        assert f"optimizer.lr={trial.params['optimizer.lr']}" in run["overrides"]


def test_a_killed_process_s_trial_is_retried_and_a_third_process_finishes_the_study(
    postgres, tmp_path
):
    """SIGKILL one of two processes in the middle of a trial: its heartbeats stop, the trial is
    marked FAIL after the grace period and queued again with its parameters, and a third process
    (started with the same command) runs it; the study ends with its 4 trials complete."""
    args = [
        *SEARCH,
        f"hydra.sweeper.storage={postgres}",
        "hydra.sweeper.study_name=killed",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=4",
    ]
    # a's trial trains until it is killed: 40 epochs could end before b's three trials (seen once)
    a = start(*args, "trainer.epochs=1000", f"hydra.sweep.dir={tmp_path / 'a'}")
    deadline = time.monotonic() + 120
    while not running_jobs(tmp_path / "a"):  # b starts once a's trial trains, or b takes all 4
        assert a.poll() is None and time.monotonic() < deadline, "a's trial never started"
        time.sleep(0.5)
    b = start(*args, f"hydra.sweep.dir={tmp_path / 'b'}")
    code, err = finish(b)  # b stops once the study has 4 trials, a's running one among them
    assert code == 0, err
    (killed_job,) = running_jobs(tmp_path / "a")
    a.send_signal(signal.SIGKILL)
    finish(a)
    killed = int(killed_job.name)
    assert json.loads((killed_job / "summary.json").read_text())["status"] == "running"  # no word

    time.sleep(6)  # past the grace period: the killed trial's last heartbeat is stale
    code, err = finish(start(*args, f"hydra.sweep.dir={tmp_path / 'c'}"))
    assert code == 0, err
    study = load(postgres, "killed")
    assert study.trials[killed].state.name == "FAIL"
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert retry.state.name == "COMPLETE" and retry.params == study.trials[killed].params
    assert [t.state.name for t in counted(study)] == ["COMPLETE"] * 4
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    job_folders = [p for s in "abc" for p in (tmp_path / s).glob("[0-9]*")]
    assert sorted(int(p.name) for p in job_folders) == sorted(
        t.number for t in study.trials if "surplus" not in t.user_attrs
    )


# -- searches started together on an empty database ----------------------------------------------


def test_a_search_that_loses_the_race_to_create_the_tables_tries_again(monkeypatch):
    """Two searches on a fresh PostgreSQL database both create Optuna's tables; the loser sees
    "relation ... already exists" (seen in the two-process test above) or a unique violation,
    and opens the storage again. Any other SQL error is raised."""
    import optuna
    import sqlalchemy.exc

    from hydra_plugins.optuna_study_sweeper import _study as module

    def sweeper(errors: list[Exception]) -> module.StudyLoop:
        def storage(*args, **kwargs):
            if errors:
                raise errors.pop(0)
            return "opened"

        monkeypatch.setattr(optuna.storages, "RDBStorage", storage)
        return module.StudyLoop(
            sampler=None,
            pruner=None,
            direction="maximize",
            storage="postgresql://x/y",
            study_name="s",
            n_trials=1,
            n_jobs=1,
            max_failure_rate=0.0,
            heartbeat_interval=60,
            grace_period=120,
            max_retry=None,
            params=None,
        )

    monkeypatch.setattr(module.time, "sleep", lambda seconds: None)
    duplicate = sqlalchemy.exc.ProgrammingError(
        "CREATE TABLE studies", {}, Exception('relation "studies" already exists')
    )
    unique = sqlalchemy.exc.IntegrityError("CREATE TYPE", {}, Exception("duplicate key value"))
    assert sweeper([duplicate, unique]).storage() == "opened"
    other = sqlalchemy.exc.ProgrammingError(
        "SELECT", {}, Exception("permission denied for table studies")
    )
    with pytest.raises(sqlalchemy.exc.ProgrammingError, match="permission denied"):
        sweeper([other]).storage()
