"""Training from the web page, without Gradio: the one train.py process that trains (start, follow,
stop with SIGINT, resume) and what the page says of its run.

The page runs the real train.py, as ``python train.py OVERRIDE ...`` typed in a terminal would,
but from an argument list (``subprocess.Popen([...])``), never through a shell, so no override can
run a command. It names the run folder itself (``hydra.run.dir``), so it knows where to watch.
What the page knows of a run lives here, in the server, not in a browser's session: a reloaded or
closed page finds it again, and a restarted server finds a run still training in its folder by its
lock (src/runs/lock.py). The form and its checks: src/web/train_form.py.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.contract import RunPaths, Status
from src.errors import ConfigError
from src.fileio import process_alive
from src.runs import lock as runlock
from src.runs.catalogue import Run, find_runs
from src.runs.resume import saved_overrides
from src.web.allowlist import DEFAULT_FOLDERS
from src.web.train_form import TRAIN_PY, TrainForm, check_overrides, shown_command

PASSWORD_VARIABLE = "WORKBENCH_PASSWORD"
USER_VARIABLE = "WORKBENCH_USER"  # the login's user name, "workbench" unless set


def hydra_value(path: Path) -> str:
    """A path as a Hydra override's value, quoted when it has more than letters, digits and ./-_"""
    text = str(path)
    if re.fullmatch(r"[\w./-]+", text):
        return text
    if "'" in text:
        raise ConfigError(
            f"{text}: a folder whose name has a ' cannot be named to train.py by the "
            "page; start app.py from another folder."
        )
    return f"'{text}'"


def new_run_folder(outputs: Path) -> Path:
    """outputs/DATE/TIME, as train.py names a run, with _2, _3, ... when that second is taken."""
    base = outputs / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    folder, number = base, 1
    while folder.exists():
        number += 1
        folder = base.with_name(f"{base.name}_{number}")
    return folder


def training_off_reason(host: str, password: str | None) -> str | None:
    """Why the page may not train, or None when it may: on this machine only (a loopback
    address), or with a password (Gradio's login)."""
    if password:
        return None
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return (
        f"Training from the page is off: the page listens on {host}, which other machines can "
        f"reach, and has no password; set {PASSWORD_VARIABLE} and start app.py again to train "
        "from the page (everyone then logs in), or listen on 127.0.0.1."
    )


@dataclass
class Job:
    """A train.py process and its run folder."""

    folder: Path
    pid: int
    epochs: int | None  # planned, when known
    command: str = ""  # as shown on the page
    process: subprocess.Popen | None = None  # None: found training after the server restarted
    output: Path | None = None  # the child's stdout and stderr

    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        holder = runlock.holder(self.folder) or {}
        return holder.get("pid") == self.pid and process_alive(self.pid)

    def last_words(self) -> str:
        """The last line train.py printed (the sentence of a stop or an error), if it printed."""
        try:
            text = self.output.read_text(errors="replace") if self.output else ""
        except OSError:
            return ""
        lines = [
            line.strip()
            for line in re.split(r"[\r\n]", text)
            if line.strip() and not line.startswith("Set the environment variable HYDRA_FULL_ERROR")
        ]
        return lines[-1] if lines else ""


def planned_epochs(folder: Path, summary: dict) -> int | None:
    """trainer.epochs of the run: its config's, or the last resume's override of it."""
    try:
        epochs = int(OmegaConf.load(RunPaths(folder).hydra_config).trainer.epochs)
    except (OSError, ValueError, OmegaConfBaseException):
        epochs = None
    for resume in summary.get("resumes", []):
        for override in resume.get("overrides", []):
            if override.lstrip("+").startswith("trainer.epochs="):
                epochs = int(override.split("=", 1)[1])
    return epochs


def find_live_run(outputs: Path) -> Job | None:
    """A run under ``outputs`` that says running and whose lock names a live process on this
    machine: one the page started before its server restarted (or the command line did)."""
    for run in find_runs([outputs]):
        holder = runlock.holder(run.path) if run.status == Status.RUNNING else None
        here = holder and holder.get("host") == socket.gethostname()
        if here and process_alive(holder.get("pid", -1)):
            return Job(run.path, holder["pid"], planned_epochs(run.path, run.summary))
    return None


class TrainingControl:
    """Starts, follows, stops and resumes one train.py at a time, its runs in ``outputs``.

    Gradio calls it from several threads and for every open page, so the state is kept here,
    once per server, under a lock."""

    LOOK_AGAIN_SECONDS = 5  # how often to look for a live run when the page follows none

    def __init__(self, outputs: Path = Path("outputs"), more_folders: Sequence[Path] = ()):
        self.outputs = Path(outputs)
        # Where paths typed on the page may point: dataset_path/, outputs/, this page's outputs
        # and the folders app.py was told to allow (--allow-folder).
        folders = (*DEFAULT_FOLDERS, self.outputs, *map(Path, more_folders))
        self.folders = tuple(dict.fromkeys(folder.resolve() for folder in folders))
        self.job: Job | None = None  # the run the page follows: training, or the last one
        self._lock = threading.Lock()
        self._looked = 0.0
        # The children's output, removed with this object (or when the server exits).
        self._logs_folder = tempfile.TemporaryDirectory(prefix="vit-webtrain-")
        self._logs = Path(self._logs_folder.name)

    def follow(self) -> Job | None:
        """The run to show: the page's, else one found training in outputs/."""
        with self._lock:
            if time.monotonic() - self._looked > self.LOOK_AGAIN_SECONDS:
                self._find_live_run()
            return self.job

    def _find_live_run(self) -> None:
        """Follows a run found training in outputs/ when the page's own is not training."""
        self._looked = time.monotonic()
        if self.job is None or not self.job.running():
            found = find_live_run(self.outputs) if self.outputs.is_dir() else None
            self.job = found or self.job

    def start(self, form: TrainForm) -> Job:
        """train.py with the form's overrides in a new folder; a bad setting raises its sentence
        and nothing starts."""
        overrides = form.overrides(self.folders)
        cfg = check_overrides(overrides)
        with self._lock:
            self._refuse_if_busy()
            folder = new_run_folder(self.outputs)
            return self._launch(
                [*overrides, f"hydra.run.dir={hydra_value(folder)}"], folder, cfg.trainer.epochs
            )

    def resume(self, folder: str | Path) -> Job:
        """train.py resume=FOLDER: the run goes on in its folder from its last checkpoint."""
        folder = Path(folder)
        saved_overrides(folder)  # a folder train.py made, or the sentence saying it is not
        with self._lock:
            self._refuse_if_busy()
            return self._launch(
                [f"resume={hydra_value(folder)}"],
                folder,
                planned_epochs(folder, Run.read(folder).summary),
            )

    def stop(self) -> str:
        """SIGINT to the run, as Ctrl-C: it stops at the next step and keeps its last epoch."""
        with self._lock:
            job = self.job
            if job is None or not job.running():
                raise ConfigError("No run is training, so there is nothing to stop.")
            os.kill(job.pid, signal.SIGINT)
        return (
            f"Sent SIGINT (Ctrl-C) to train.py (process {job.pid}): {job.folder} stops at the "
            "next step and keeps its last complete epoch (Stop again stops it at once)."
        )

    def _refuse_if_busy(self) -> None:
        self._find_live_run()  # also one started before this server, if it has not looked yet
        job = self.job
        if job is not None and job.running():
            raise ConfigError(
                f"A run is already training in {job.folder} (process {job.pid}); the page trains "
                "one run at a time, so wait for it to end or stop it, then start again."
            )

    def _launch(self, overrides: list[str], folder: Path, epochs: int | None) -> Job:
        argv = [sys.executable, str(TRAIN_PY), *overrides]
        if self.job is not None and self.job.output is not None:
            self.job.output.unlink(missing_ok=True)
        output = self._logs / f"train-{time.time_ns()}.log"
        with open(output, "wb") as sink:
            # Its own session: Ctrl-C in app.py's terminal stops the page, not the run (the page
            # started again finds it). Stop sends SIGINT to the run alone.
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.job = Job(folder, process.pid, epochs, shown_command(argv), process, output)
        return self.job


def metrics(folder: Path) -> pd.DataFrame:
    """The run's metrics.csv so far (empty before its first epoch ends)."""
    try:
        return pd.read_csv(RunPaths(folder).metrics)
    except (OSError, ValueError):
        return pd.DataFrame({"epoch": [], "epoch_seconds": []})


def duration(seconds: float) -> str:
    """3.2 s, 45 s, 2 min 05 s, 1 h 03 min."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def time_left(rows: pd.DataFrame, epochs: int | None) -> float | None:
    """The epochs still to train times the mean of the last three epochs' times."""
    if rows.empty or not epochs:
        return None
    return max(epochs - int(rows["epoch"].iloc[-1]), 0) * float(
        rows["epoch_seconds"].tail(3).mean()
    )


def progress_text(job: Job, summary: dict, rows: pd.DataFrame) -> str:
    """What the page says of the run: its epoch, epoch time and time left while it trains; how it
    ended (with train.py's last sentence when it stopped or failed) once it has."""
    done = int(rows["epoch"].iloc[-1]) if not rows.empty else 0
    of = f" of {job.epochs}" if job.epochs else ""
    where = f"`{job.folder}`"
    if job.running():
        if rows.empty:
            return f"**Training** {where} (process {job.pid}): starting; epoch 1{of} under way."
        if job.epochs and done >= job.epochs:
            return f"**Training** {where}: all {done} epochs done; testing and writing the report."
        left = time_left(rows, job.epochs)
        return (
            f"**Training** {where}: epoch {done}{of} done, the last in "
            f"{duration(float(rows['epoch_seconds'].iloc[-1]))}"
            + (f"; about {duration(left)} left." if left is not None else ".")
        )
    status, words = summary.get("status"), job.last_words()
    code = job.process.returncode if job.process is not None else None  # None: not our child
    refused = code not in (0, None) and status not in (Status.INTERRUPTED, Status.FAILED)
    if refused:  # by train.py, before the run began
        return f"**train.py stopped** (exit status {code}) for {where}: {words or 'no output'}"
    if status == Status.COMPLETED:
        return (
            f"**Completed** {where}: {done} epochs, best validation accuracy "
            f"{summary.get('best_val_acc', 0):.2%} (epoch {summary.get('best_epoch', '?')}), "
            f"test accuracy {summary.get('test_acc', 0):.2%}. It is now the page's run."
        )
    if status == Status.INTERRUPTED:
        return f"**Interrupted** {where} after epoch {done}: {words} Resume continues it."
    if status == Status.FAILED:
        return f"**Failed** {where}: {summary.get('error') or words}"
    return f"**train.py ended** without finishing {where}: {words or 'no output'}"
