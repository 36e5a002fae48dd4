"""One process per run folder: a lock held while a process trains in it.

The lock is the OS's file lock (``flock``) on ``.lock`` in the run folder, so it goes away with
the process that holds it, however that process ends (``kill -9`` included): a crashed run can
always be resumed. The file also names its holder (process id, host, since when), so a second
process is refused with one sentence that says who holds the folder.

A folder that already holds a run is refused to a new one (not to ``resume=``) at the same moment,
unless that run stopped before its first checkpoint: it is started again there.

It is taken twice over, by the same code: by a Hydra callback (``LockRunFolder``) before Hydra
writes anything into the run folder (its ``.hydra/`` and ``train.log``), and by ``train()``
itself, for callers without Hydra; a process that already holds the folder takes it again for
free. Under torchrun only rank 0 takes it, for the whole job.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from src import distributed
from src.contract import RunPaths, read_summary
from src.errors import ConfigError
from src.runs.resume import nothing_to_resume, saved_overrides

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not locked
    fcntl = None


_held: dict[Path, list] = {}  # run folder -> [file descriptor, how many times taken]


def acquire(run_dir: str | Path) -> None:
    """Takes ``run_dir``'s lock (again, if this process holds it already); a folder held by
    another process raises ConfigError naming that process and its host."""
    key = Path(run_dir).resolve()
    if key in _held:
        _held[key][1] += 1
        return
    if fcntl is None:
        return
    key.mkdir(parents=True, exist_ok=True)
    path = RunPaths(key).lock
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ConfigError(_busy_message(key, holder)) from None
        # The holder before us may have removed the file between our open and our lock: then
        # we hold a lock on a file nobody else can find; open the one now there instead.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now().isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    _held[key] = [fd, 1]


def release(run_dir: str | Path) -> None:
    """Gives the lock back once it has been released as often as it was taken."""
    key = Path(run_dir).resolve()
    if key not in _held:
        return
    _held[key][1] -= 1
    if _held[key][1] > 0:
        return
    fd, _ = _held.pop(key)
    with contextlib.suppress(OSError):
        RunPaths(key).lock.unlink()  # while still locked: whoever opens it next makes a new one
    os.close(fd)  # the lock goes with the file descriptor


@contextlib.contextmanager
def holding(run_dir: str | Path) -> Iterator[None]:
    """``run_dir``'s lock for the block, taken by torchrun's rank 0 (or a lone process) alone."""
    if not distributed.is_main():
        yield
        return
    acquire(run_dir)
    try:
        yield
    finally:
        release(run_dir)


def holder(run_dir: str | Path) -> dict[str, Any] | None:
    """Who the folder's ``.lock`` names (pid, host, since), read without taking the lock (a probe
    that took it could refuse a run starting at that moment); None when there is no lock file.
    A holder killed with ``kill -9`` leaves its file behind, so check that its pid still lives."""
    path = RunPaths(run_dir).lock
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return _read_holder(fd) or None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _busy_message(run_dir: Path, holder: dict[str, Any]) -> str:
    who = (
        f"process {holder['pid']} on {holder['host']} (since {holder.get('since', '?')})"
        if "pid" in holder and "host" in holder
        else "another process"
    )
    return (
        f"{run_dir} is in use: {who} is training in it, and two processes would overwrite each "
        f"other's checkpoint, weights and metrics; wait for it to end (or stop it), then resume "
        f"with: python train.py resume={run_dir}"
    )


def refuse_a_second_run(run_dir: str | Path) -> None:
    """A new run in a folder that holds one (hydra.run.dir named again) would overwrite its
    weights, checkpoint and metrics: refused, unless torchrun restarted the job to continue it,
    or that run stopped before its first checkpoint (nothing to resume: the command that failed,
    run again, starts over there)."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    started = "started_at" in summary or RunPaths(run_dir).last_checkpoint.is_file()
    if started and distributed.restart_count() == 0 and not nothing_to_resume(run_dir):
        raise ConfigError(
            f"{run_dir} already holds a run (status {summary.get('status', 'unknown')}), and a new "
            f"one would overwrite its weights, checkpoint and metrics; choose another folder with "
            f"hydra.run.dir=, or continue that run with: python train.py resume={run_dir}"
        )


class LockRunFolder(Callback):
    """Hydra callback: takes the run folder's lock before Hydra writes into it (``.hydra/``,
    ``train.log``), and gives it back when the run ends; a new run in a folder that holds one is
    refused then too. Single runs only: each job of a multirun has its own new folder."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        if not distributed.is_main():
            return
        run_dir = str(config.hydra.run.dir)
        try:
            if config.get("resume"):  # before the lock makes the folder: it must be a run's
                saved_overrides(Path(run_dir))
            acquire(run_dir)
            if not config.get("resume"):
                try:
                    refuse_a_second_run(run_dir)
                except ConfigError:
                    release(run_dir)
                    raise
        except ConfigError as err:  # Hydra turns a callback's exceptions into warnings: exit here
            print(err, file=sys.stderr)
            raise SystemExit(1) from None

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        if distributed.is_main():
            release(str(config.hydra.run.dir))
