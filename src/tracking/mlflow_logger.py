"""MLflow: one MLflow run per run folder, through ``MlflowClient`` (no global active run).

The default store is a SQLite file in the folder you run from (``sqlite:///mlflow.db``, MLflow's
own default; its file store is retired) with the artifacts in ``mlruns/`` beside it; see them with
``mlflow ui --backend-store-uri sqlite:///mlflow.db``. A relative SQLite path is made absolute when
the run starts, and a resumed run reopens the same run id in the store summary.json names, wherever
it is resumed from.

A tracking server that does not answer costs a few seconds, not MLflow's default of 7 retries
with growing waits (about 4 minutes): the first call, which opens the run, tries once with a short
timeout, and later calls retry a little; MLFLOW_HTTP_REQUEST_* variables you set are kept. MLflow's
own logger is kept off the console: a store that breaks mid-run would print a traceback for every
call, where ``Tracker`` says it once (in train.log too) and stops calling.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pandas as pd
from filelock import FileLock

from src.contract import Status

MAX_PARAMS_PER_BATCH = 100  # MLflow's limits for one log_batch call and one parameter value
MAX_PARAM_LENGTH = 6000
STATUS = {Status.COMPLETED: "FINISHED", Status.INTERRUPTED: "KILLED"}  # anything else: FAILED
SQLITE = "sqlite:///"
# MLflow's HTTP settings for a server (each kept when set in the environment): the first call
# fails fast, later ones retry twice after 1 s and 2 s.
FIRST_CALL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
LATER_CALLS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


class MlflowLogger:
    name = "mlflow"

    def __init__(self, settings: dict):
        self.settings = settings
        self.client = None
        self.uri = ""  # the store's URI, a SQLite file's made absolute
        self.run_id: str | None = None

    def start(
        self, run_dir: Path, name: str, group: str | None, config: dict, previous: dict
    ) -> dict:
        resuming = bool(previous.get("run_id") and previous.get("tracking_uri"))
        self.uri = absolute(previous["tracking_uri"] if resuming else self.settings["tracking_uri"])
        quiet_mlflow_logger()
        set_http_settings(LATER_CALLS)
        self.client = open_store(self.uri)
        with answering_server(self.uri):  # the first call to a server: does it answer?
            if resuming:  # the same run, in the store it was made in
                run = self.client.get_run(previous["run_id"])
            else:
                experiment = self._experiment(
                    group or self.settings.get("experiment_name") or "vit-workbench"
                )
        if resuming:
            self.client.update_run(run.info.run_id, status="RUNNING")
        else:
            tags = {
                "run_folder": str(Path(run_dir).resolve()),
                **({"sweep": group} if group else {}),
            }
            run = self.client.create_run(experiment, run_name=name, tags=tags)
        self.run_id = run.info.run_id
        self._log_params(config, already=run.data.params)
        self.client.log_dict(self.run_id, config, "config.yaml")
        return {
            "run_id": self.run_id,
            "experiment_id": run.info.experiment_id,
            "tracking_uri": self.uri,
        }

    def log_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        )

    def log_summary(self, values: dict[str, float], step: int | None) -> None:
        self.log_metrics(values, step)

    def log_figure(self, name: str, path: Path, step: int | None) -> None:
        self.client.log_artifact(self.run_id, str(path), "plots")

    def log_table(self, name: str, table: pd.DataFrame, path: Path, step: int | None) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def log_model(self, paths: list[Path]) -> None:
        if self.settings.get("log_weights"):
            for path in paths:
                self.client.log_artifact(self.run_id, str(path), "model")

    def finish(self, status: str) -> None:
        if self.run_id is not None:
            run_id, self.run_id = self.run_id, None
            self.client.set_terminated(run_id, status=STATUS.get(status, "FAILED"))

    def _experiment(self, name: str) -> str:
        """The experiment's id, made if it is new (two sweep jobs at once may both try)."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name, artifact_location=self._artifacts(name))
            except MlflowException:
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        return found.experiment_id

    def _artifacts(self, experiment: str) -> str | None:
        """Where an experiment's files go: logger.mlflow.artifact_location, or mlruns/ beside a
        SQLite store (named after the experiment), or, for a server, wherever it says."""
        root = self.settings.get("artifact_location")
        store = sqlite_file(self.uri)
        if root is None and store is not None:
            root = store.parent / "mlruns"
        if root is None:
            return None
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment).strip("_.") or "experiment"
        if "://" in str(root):
            return f"{str(root).rstrip('/')}/{slug}"
        return (Path(root).resolve() / slug).as_uri()

    def _log_params(self, config: dict, already: dict[str, str]) -> None:
        """The resolved config as dotted parameters. MLflow keeps a parameter's first value, so a
        resumed run adds only new ones (config.yaml, among the artifacts, is always the latest)."""
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in flatten(config).items() if k not in already]
        for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + MAX_PARAMS_PER_BATCH])


def absolute(uri: str) -> str:
    """sqlite:///mlflow.db names a file in the folder you run from: pin it there, so that a resume
    (or a job started elsewhere) writes to the same store. Other URIs are left as they are."""
    path = sqlite_file(uri)
    _, mark, query = uri.partition("?")  # options such as ?timeout=20 stay as they are
    return uri if path is None else f"{SQLITE}{path}{mark}{query}"


def sqlite_file(uri: str) -> Path | None:
    """The file a sqlite:/// URI names (without its ?query), or None for any other store."""
    if not uri.startswith(SQLITE):
        return None
    name = unquote(uri.removeprefix(SQLITE).split("?")[0])
    return None if name in ("", ":memory:") else Path(name).resolve()


def open_store(uri: str):
    """An MlflowClient whose store is ready. MLflow creates a new SQLite store's tables on first
    use, and two jobs doing that at once (a joblib sweep) break each other's migrations: a file
    lock beside the store lets one create them while the other waits."""
    from mlflow import MlflowClient

    path = sqlite_file(uri)
    if path is None:
        return MlflowClient(uri)
    with FileLock(f"{path}.lock"):
        return MlflowClient(uri)  # opens the store: makes or upgrades its tables


def quiet_mlflow_logger() -> None:
    """MLflow's loggers say nothing on the console (their handler writes to stderr)."""
    logging.getLogger("mlflow").setLevel(logging.CRITICAL + 1)


_SET_HERE: dict[str, str] = {}  # what this module set each MLFLOW_HTTP_REQUEST_* variable to


def set_http_settings(values: dict[str, str]) -> dict[str, str | None]:
    """Sets each variable the user has not set; returns what they were, to put back."""
    before = {}
    for name, value in values.items():
        if name in os.environ and os.environ[name] != _SET_HERE.get(name):
            continue  # the user's
        before[name] = os.environ.get(name)
        os.environ[name] = _SET_HERE[name] = value
    return before


@contextlib.contextmanager
def answering_server(uri: str) -> Iterator[None]:
    """For an http(s) store: one try with a short timeout (FIRST_CALL), and a server that does
    not answer said in one sentence."""
    if not uri.startswith(("http://", "https://")):
        yield
        return
    from mlflow.exceptions import MlflowException

    before = set_http_settings(FIRST_CALL)
    try:
        yield
    except MlflowException as err:
        if "Max retries exceeded" in str(err) or "ConnectionError" in str(err):
            raise ConnectionError(
                "the MLflow server that logger.mlflow.tracking_uri names does not answer"
            ) from None
        raise
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = _SET_HERE[name] = value


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """{"model": {"depth": 6}} -> {"model.depth": "6"}: MLflow parameters are flat strings."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = _text(value)[:MAX_PARAM_LENGTH]
    return flat


def _text(value: Any) -> str:
    return "null" if value is None else str(value)
