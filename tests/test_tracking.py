"""Experiment tracking, offline: W&B and MLflow hold a copy of the run folder, survive a resume and
a sweep, and a logger that breaks never costs the run."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from src.errors import ConfigError
from src.runs.folder import RunFolder
from src.runs.resume import check_resumable
from src.tracking import Tracker, from_config, mlflow_logger
from src.tracking.mlflow_logger import MlflowLogger
from src.training.run import train
from src.training.stopping import TrainingStopped
from tests.conftest import FIGURES, ROOT, TINY_RUN, WITH_FIGURES, compose_config, free_port
from tests.helpers.wandb_records import read_run


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory) -> dict[str, str]:
    """W&B offline and quiet, its own folders in tmp; no API key, no tracking server in sight."""
    home = tmp_path_factory.mktemp("wandb-home")
    env = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"),
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in ("WANDB_API_KEY", "MLFLOW_TRACKING_URI"):
            mp.delenv(key, raising=False)
        yield env


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory, offline_env) -> str:
    """One SQLite store for the module (creating its tables takes seconds); tests read by run id."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def wandb_runs(run_dir: Path) -> list[dict]:
    """The W&B offline runs in a run folder, oldest first (a resumed run adds one per session)."""
    return [read_run(f) for f in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))]


def mlflow_history(client: MlflowClient, run_id: str, key: str) -> tuple[list[int], list[float]]:
    """A metric's steps and values, in step order (a step logged twice would show twice)."""
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
    return [step for step, _ in history], [value for _, value in history]


def same_as_csv(history: tuple[list[int], list[float]], metrics: pd.DataFrame, column: str) -> bool:
    steps, values = history
    return steps == metrics["epoch"].tolist() and values == pytest.approx(metrics[column].tolist())


# --- the config group, checked before any work ---------------------------------------------------


@pytest.mark.parametrize(
    "overrides, backends, tensorboard",
    [
        ([], [], True),  # the default: TensorBoard, as before
        (["logger=none"], [], False),
        (["~logger"], [], False),  # the group deleted: no logger either
        (["logger=wandb"], ["wandb"], False),
        (["logger=[tensorboard,mlflow]"], ["mlflow"], True),
        (["logger=[tensorboard,wandb,mlflow]"], ["wandb", "mlflow"], True),
    ],
)
def test_the_logger_group_takes_one_option_or_a_list(overrides, backends, tensorboard, tmp_path):
    tracker = from_config(compose_config(overrides), tmp_path)
    assert [b.name for b in tracker.backends] == backends
    assert tracker.tensorboard is tensorboard


def test_a_missing_package_is_one_sentence_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    with pytest.raises(ConfigError) as err:
        train(compose_config(TINY_RUN + ["logger=[tensorboard,wandb]"]), tmp_path)
    sentence = "logger=wandb needs the wandb package: pip install -r requirements-tracking.txt"
    assert str(err.value) == sentence
    assert read_json(tmp_path / "summary.json") == {"status": "failed", "error": sentence}
    assert not (tmp_path / "metrics.csv").exists() and not (tmp_path / "wandb").exists()


def test_a_resumed_run_may_change_its_loggers():
    check_resumable(
        compose_config(["logger=tensorboard"]),
        compose_config(["logger=[tensorboard,wandb]"]),
        Path("run"),
    )


# --- the fan-out, with stand-in backends ---------------------------------------------------------


class Recorder:
    """A backend that notes every call; with ``fail_on`` it raises on that call instead."""

    def __init__(self, name: str, fail_on: str | None = None):
        self.name, self.fail_on, self.calls, self.arguments = name, fail_on, [], {}

    def __getattr__(self, method: str):
        def call(*args):
            self.calls.append(method)
            self.arguments[method] = args
            if method == self.fail_on:
                raise OSError("attempt to write a readonly database\nmore detail")
            return {"id": "abc"} if method == "start" else None

        return call


def test_a_failing_backend_is_reported_in_one_line_and_dropped(tmp_path, caplog):
    broken, fine = Recorder("mlflow", fail_on="log_figure"), Recorder("wandb")
    tracker = Tracker([broken, fine], config={"seed": 0})
    tracker.start(tmp_path, {})
    for epoch in (1, 2):
        tracker.log_metrics({"epoch": epoch}, step=epoch)
        tracker.log_figure("curves", tmp_path / "curves.png")
    tracker.finish("completed")

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "mlflow logging failed (OSError: attempt to write a readonly database); the run goes on "
        "without it; the run folder has everything"
    ]
    assert broken.calls == ["start", "log_metrics", "log_figure", "finish"]  # finish: to release it
    assert fine.calls == ["start"] + ["log_metrics", "log_figure"] * 2 + ["finish"]
    assert tracker.summary() == {
        "mlflow": {"id": "abc", "error": "OSError: attempt to write a readonly database"},
        "wandb": {"id": "abc"},
    }


def test_a_backend_that_fails_to_reopen_its_run_keeps_the_ids_for_the_next_resume(tmp_path):
    before = {
        "mlflow": {
            "run_id": "r1",
            "tracking_uri": "sqlite:////runs/mlflow.db",
            "error": "OSError: an earlier failure",
        }
    }
    backend = Recorder("mlflow", fail_on="start")
    tracker = Tracker([backend])
    tracker.start(tmp_path, before)
    assert backend.arguments["start"][-1] == {
        "run_id": "r1",
        "tracking_uri": "sqlite:////runs/mlflow.db",
    }
    assert tracker.summary(before) == {
        "mlflow": {
            "run_id": "r1",
            "tracking_uri": "sqlite:////runs/mlflow.db",
            "error": "OSError: attempt to write a readonly database",
        }
    }


def test_only_rank_0_logs(tmp_path):
    backend = Recorder("wandb")
    run = RunFolder(tmp_path / "run", writes=False, tracker=Tracker([backend]))
    run.log_epoch({"epoch": 1, "val_acc": 0.5})
    run.update_summary(status="completed", test_acc=0.5)
    run.close()
    assert backend.calls == [] and not (tmp_path / "run").exists()


def test_logger_none_writes_no_tensorboard_files(tmp_path):
    run = RunFolder(tmp_path, tracker=Tracker(tensorboard=False))
    run.log_epoch({"epoch": 1, "val_acc": 0.5})
    run.close()
    assert not (tmp_path / "tensorboard").exists() and (tmp_path / "metrics.csv").is_file()


# --- real runs, W&B offline and MLflow on a local store ------------------------------------------


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, mlflow_uri):
    """A tiny run copied to W&B and MLflow, with the best weights (and not to TensorBoard)."""
    run_dir = tmp_path_factory.mktemp("tracked")
    train(
        compose_config(
            TINY_RUN
            + [
                WITH_FIGURES,
                "logger=[wandb,mlflow]",
                f"logger.mlflow.tracking_uri={mlflow_uri}",
                "logger.wandb.log_weights=true",
                "logger.mlflow.log_weights=true",
            ]
        ),
        run_dir,
    )
    return run_dir


@pytest.mark.slow
def test_wandb_offline_files_hold_the_metrics_config_and_figures(tracked_run):
    summary = read_json(tracked_run / "summary.json")
    assert summary["status"] == "completed" and not (tracked_run / "tensorboard").exists()
    (run,) = wandb_runs(tracked_run)
    assert (
        run["id"] == summary["tracking"]["wandb"]["id"]
        and summary["tracking"]["wandb"]["mode"] == "offline"
    )
    assert run["name"] == str(tracked_run.resolve()) and run["project"] == "vit-workbench"
    assert run["config"]["model"]["depth"] == 1 and run["config"]["trainer"]["epochs"] == 2

    metrics = pd.read_csv(tracked_run / "metrics.csv")
    assert sorted(run["history"]) == metrics["epoch"].tolist()
    for row in metrics.to_dict("records"):  # every column, under its metrics.csv name
        logged = run["history"][row["epoch"]]
        assert {k: logged[k] for k in row} == pytest.approx(row)
    # the end-of-run figures and tables: in the summary (each epoch's row is committed when logged)
    for name in FIGURES:
        assert run["summary"][f"plots/{name}"]["_type"] == "image-file", name
    table = run["summary"]["metrics_per_class"]
    assert table["_type"] == "table-file" and table["nrows"] == 12
    for key in ("test_acc", "test_loss", "test_macro_f1", "best_val_acc"):
        assert run["summary"][key] == pytest.approx(summary[key])
    (model,) = [a for a in run["artifacts"] if a["type"] == "model"]
    assert model["name"] == f"model-{run['id']}" and "best" in model["aliases"]
    assert model["files"] == ["best.safetensors", "model.json"]


@pytest.mark.slow
def test_mlflow_store_holds_each_epoch_the_params_and_the_figures(tracked_run, mlflow_uri):
    record = read_json(tracked_run / "summary.json")["tracking"]["mlflow"]
    client = MlflowClient(mlflow_uri)
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == str(tracked_run.resolve())
    assert client.get_experiment(run.info.experiment_id).name == "vit-workbench"

    metrics = pd.read_csv(tracked_run / "metrics.csv")
    for column in metrics.columns:
        assert same_as_csv(mlflow_history(client, run.info.run_id, column), metrics, column), column
    summary = read_json(tracked_run / "summary.json")
    for key in ("test_acc", "test_loss", "test_weighted_f1"):
        assert run.data.metrics[key] == pytest.approx(summary[key])
    params = run.data.params
    assert params["model.depth"] == "1" and params["trainer.epochs"] == "2"
    assert params["dataset.name"] == "digits"

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics_per_class.csv", "confusion_matrix.csv", "config.yaml", "plots"} <= artifacts
    figures = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert figures == {p.name for p in (tracked_run / "plots").glob("*.png")}
    assert {f"{name}.png" for name in FIGURES} <= figures
    weights = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "model")}
    assert weights == {"best.safetensors", "model.json"}


@pytest.mark.slow
def test_a_run_killed_in_epoch_3_has_every_epoch_in_wandb_once_after_its_resume(
    tmp_path, offline_env
):
    """kill -9 in epoch 3 (at its second step, 1 s after it): epoch 2, the last one logged, is in
    W&B's records (its row committed when logged, not left open for a later step), and the
    resume from epoch 2's checkpoint logs 3 and 4: each epoch of metrics.csv once, across both
    sessions. (W&B's service writes its file every 15 s; here every 0.2 s, so that the 1 s
    before the kill is enough for what it was sent.)"""
    run = [*TINY_RUN, "trainer.epochs=4", "logger=wandb", f"hydra.run.dir={tmp_path}"]
    env = {
        # not this process's W&B service (WANDB_SERVICE, set by W&B for the runs made in this
        # process): each train.py starts its own, which dies with it, as a real kill -9 has it
        **{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"},
        **offline_env,
        "OMP_NUM_THREADS": "1",
        "WANDB__TRANSACTION_LOG_FLUSH_INTERVAL": "0.2",
    }
    killed = subprocess.Popen(
        [sys.executable, "tests/helpers/dying_train.py", "0:0:3:2:1", *run],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    _, stderr = killed.communicate(timeout=300)
    assert killed.returncode == -9, stderr
    # W&B's service process outlives its client by up to a few seconds, and holds the run id
    # until it notices ("run ID ... is in use" to a resume started before then).
    deadline = time.monotonic() + 60
    while wandb_service_of(killed.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pd.read_csv(tmp_path / "metrics.csv")["epoch"].tolist() == [1, 2]
    resumed = subprocess.run(
        [sys.executable, "train.py", *run, f"resume={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert resumed.returncode == 0, resumed.stderr
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    sessions = wandb_runs(tmp_path)
    log = (tmp_path / "train.log").read_text()
    assert len(sessions) == 2 and len({s["id"] for s in sessions}) == 1, log
    logged = [step for s in sessions for step in sorted(s["history"])]
    assert logged == metrics["epoch"].tolist() == [1, 2, 3, 4]
    for session in sessions:
        for step, row in session["history"].items():
            assert row["val_acc"] == pytest.approx(metrics.set_index("epoch").loc[step, "val_acc"])


def wandb_service_of(pid: int) -> bool:
    """Whether a wandb-core process started for client ``pid`` still runs."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if words and words[0].endswith(b"wandb-core") and str(pid).encode() in words:
            return True
    return False


def stop_after_epoch(monkeypatch, epoch: int) -> None:
    """Ctrl-C while epoch ``epoch`` is logged: training stops there, its checkpoint kept."""
    log_epoch = RunFolder.log_epoch

    def log_and_stop(self, row):
        log_epoch(self, row)
        if row["epoch"] == epoch:
            os.kill(os.getpid(), 2)

    monkeypatch.setattr(RunFolder, "log_epoch", log_and_stop)


@pytest.mark.slow
def test_a_resumed_run_adds_to_the_same_wandb_and_mlflow_runs(tmp_path, monkeypatch, mlflow_uri):
    run = TINY_RUN + [
        "trainer.epochs=3",
        "trainer.visualize=false",
        "logger=[wandb,mlflow]",
        f"logger.mlflow.tracking_uri={mlflow_uri}",
    ]
    stop_after_epoch(monkeypatch, 1)
    with pytest.raises(TrainingStopped):
        train(compose_config(run), tmp_path)
    monkeypatch.undo()
    first = read_json(tmp_path / "summary.json")["tracking"]
    client = MlflowClient(mlflow_uri)
    assert client.get_run(first["mlflow"]["run_id"]).info.status == "KILLED"

    train(compose_config(run + [f"resume={tmp_path}", "trainer.epochs=4"]), tmp_path)

    summary = read_json(tmp_path / "summary.json")
    assert summary["status"] == "completed" and summary["tracking"] == first  # the same ids
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2, 3, 4]

    run_id = first["mlflow"]["run_id"]
    assert client.get_run(run_id).info.status == "FINISHED"
    for column in ("val_acc", "train_loss", "step"):
        assert same_as_csv(mlflow_history(client, run_id, column), metrics, column), column
    assert client.get_run(run_id).data.params["trainer.epochs"] == "3"  # MLflow keeps the first
    same_folder = client.search_runs(
        [client.get_run(run_id).info.experiment_id],
        filter_string=f"tags.run_folder = '{tmp_path.resolve()}'",
    )
    assert [r.info.run_id for r in same_folder] == [run_id]

    sessions = wandb_runs(
        tmp_path
    )  # offline, each session is a file; `wandb sync` joins them by id
    assert [s["id"] for s in sessions] == [first["wandb"]["id"]] * 2
    assert [sorted(s["history"]) for s in sessions] == [[1], [2, 3, 4]]
    assert sessions[1]["config"]["trainer"]["epochs"] == 4
    assert sessions[1]["history"][4]["val_acc"] == pytest.approx(metrics["val_acc"].iloc[-1])


class Records(logging.Handler):
    """Keeps every record a logger emits (MLflow's own loggers do not propagate to the root)."""

    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.slow
def test_an_mlflow_store_that_breaks_mid_run_does_not_cost_the_run(
    tmp_path, monkeypatch, caplog, mlflow_uri
):
    """After epoch 1 every write to the SQLite store fails as a read-only file does (SQLite's
    error, raised where SQLAlchemy commits; MLflow's own handling of it runs). Training finishes;
    the failure is one warning line, and MLflow's own logger (which printed a traceback for
    every failed call, about 190 lines) emits nothing."""
    import sqlalchemy.exc
    import sqlalchemy.orm

    log_epoch = RunFolder.log_epoch

    def unwritable(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError(
            "COMMIT", {}, sqlite3.OperationalError("attempt to write a readonly database")
        )

    def log_then_break_the_store(self, row):
        log_epoch(self, row)
        if row["epoch"] == 1:
            monkeypatch.setattr(sqlalchemy.orm.Session, "commit", unwritable)

    mlflow_own = Records()
    logging.getLogger("mlflow").addHandler(mlflow_own)
    monkeypatch.setattr(RunFolder, "log_epoch", log_then_break_the_store)
    try:
        train(
            compose_config(
                TINY_RUN
                + [
                    "trainer.visualize=false",
                    "logger=[tensorboard,mlflow]",
                    f"logger.mlflow.tracking_uri={mlflow_uri}",
                ]
            ),
            tmp_path,
        )
    finally:
        monkeypatch.undo()
        logging.getLogger("mlflow").removeHandler(mlflow_own)

    assert [r.getMessage()[:60] for r in mlflow_own.records] == []
    summary = read_json(tmp_path / "summary.json")
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    for name in (
        "metrics.csv",
        "weights/best.safetensors",
        "plots/curves.png",
        "metrics_per_class.csv",
    ):
        assert (tmp_path / name).is_file(), name
    assert len(list((tmp_path / "tensorboard").iterdir())) > 0  # the other logger carried on
    failures = [r.getMessage() for r in caplog.records if "logging failed" in r.getMessage()]
    assert failures == [
        "mlflow logging failed (MlflowException: (sqlite3.OperationalError) attempt to write a "
        "readonly database); the run goes on without it; the run folder has everything"
    ]
    assert not [r for r in caplog.records if r.exc_info]  # no traceback anywhere
    assert "readonly database" in summary["tracking"]["mlflow"]["error"]
    client = MlflowClient(mlflow_uri)  # the copy holds what was logged before the store broke
    assert mlflow_history(client, summary["tracking"]["mlflow"]["run_id"], "epoch") == ([1], [1.0])


@pytest.mark.slow
def test_an_mlflow_server_that_does_not_answer_costs_seconds_and_one_line(
    tmp_path, monkeypatch, caplog, offline_env
):
    """tracking_uri names a port where nothing listens: the run starts without MLflow after one
    try (MLflow's default is 7 retries with growing waits, about 4 minutes), says so in one
    line, and trains; the MLFLOW_HTTP_REQUEST_* settings are put back as they were."""
    for name in mlflow_logger.LATER_CALLS:
        monkeypatch.delenv(name, raising=False)  # and removed again after the test
    began = time.monotonic()
    train(
        compose_config(
            TINY_RUN
            + ["logger=mlflow", f"logger.mlflow.tracking_uri=http://127.0.0.1:{free_port()}"]
        ),
        tmp_path,
    )
    assert time.monotonic() - began < 30  # the whole run; 4 minutes or more before
    warnings = [r.getMessage() for r in caplog.records if r.name == "src.tracking.tracker"]
    assert warnings == [
        "mlflow logging failed (ConnectionError: the MLflow server that "
        "logger.mlflow.tracking_uri names does not answer); the run goes on without it; the run "
        "folder has everything"
    ]
    assert not [r for r in caplog.records if r.name.startswith("urllib3")]  # no retry warnings
    summary = read_json(tmp_path / "summary.json")
    assert summary["status"] == "completed" and "error" in summary["tracking"]["mlflow"]
    assert {k: os.environ.get(k) for k in mlflow_logger.LATER_CALLS} == mlflow_logger.LATER_CALLS


def test_mlflow_http_settings_that_the_user_set_are_kept(monkeypatch):
    for name in mlflow_logger.LATER_CALLS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    mlflow_logger.set_http_settings(mlflow_logger.LATER_CALLS)
    with mlflow_logger.answering_server("http://127.0.0.1:9"):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"  # the user's
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"  # the first call's
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"  # later calls'


def test_a_relative_sqlite_store_stays_where_the_run_started(tmp_path, monkeypatch, offline_env):
    """sqlite:///mlflow.db is a file in the current folder: a resume from another folder (or a job
    started elsewhere) still goes on in the store the run was made in."""
    started, elsewhere = (tmp_path.resolve() / name for name in ("started", "elsewhere"))
    started.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(started)
    first = MlflowLogger({"tracking_uri": "sqlite:///mlflow.db"})
    record = first.start(tmp_path / "run", "run", None, {"seed": 0}, {})
    first.finish("interrupted")
    assert record["tracking_uri"] == f"sqlite:///{started / 'mlflow.db'}"

    monkeypatch.chdir(elsewhere)
    resumed = MlflowLogger({"tracking_uri": "sqlite:///mlflow.db"})
    assert resumed.start(tmp_path / "run", "run", None, {"seed": 0}, record) == record
    resumed.finish("completed")
    assert not (elsewhere / "mlflow.db").exists()
    run = MlflowClient(record["tracking_uri"]).get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((started / "mlruns").as_uri())


@pytest.mark.slow
def test_two_jobs_opening_a_new_sqlite_store_at_once_both_start(tmp_path, offline_env):
    """A joblib sweep's jobs start together; MLflow's migrations must not run twice at once."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = (
        "import sys; from pathlib import Path; from src.tracking.mlflow_logger import MlflowLogger;"
        "MlflowLogger({'tracking_uri': sys.argv[1]})"
        ".start(Path(sys.argv[2]), sys.argv[2], 'sweep', {}, {})"
    )
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", start, uri, f"job{i}"],
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    failures = [job.communicate(timeout=300)[1] for job in jobs if job.wait(timeout=300) != 0]
    assert failures == []
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["job0", "job1"]


@pytest.mark.slow
def test_a_two_job_sweep_is_one_group_and_one_experiment_from_the_command_line(
    tmp_path, offline_env
):
    sweep, uri = tmp_path / "sweep", f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--multirun",
            f"hydra.sweep.dir={sweep}",
            *TINY_RUN,
            "trainer.epochs=1",
            "trainer.visualize=false",
            "logger=[tensorboard,wandb,mlflow]",
            "model.depth=1,2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **offline_env, "MLFLOW_TRACKING_URI": uri},  # the config reads it
    )
    assert result.returncode == 0, result.stderr
    group = str(sweep.resolve())
    jobs = {f"{group}/{job}" for job in "01"}

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(group)
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.run_name for r in runs} == jobs
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.params["model.depth"] for r in runs} == {"1", "2"}

    wandb = [run for job in "01" for run in wandb_runs(sweep / job)]
    assert {run["group"] for run in wandb} == {group} and {run["name"] for run in wandb} == jobs
    assert len({run["id"] for run in wandb}) == 2
    assert all((sweep / job / "tensorboard").is_dir() for job in "01")
