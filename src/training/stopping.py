"""Stopping a run cleanly on Ctrl-C (SIGINT), SIGTERM or SIGUSR2.

The first signal only raises a flag that the training loop reads between steps, so the run stops at
a step boundary and leaves a consistent checkpoint. A second Ctrl-C stops at once; even then the
files on disk are whole, because every one of them is written atomically.

SIGUSR2 is what submitit (hydra/launcher=submitit_*) sends a job before SLURM's time limit or on
preemption. Once the run has stopped and says ``interrupted``, ``hand_on`` gives the signal to the
handler that was there before the run (submitit's, which requeues the job; docs:
guide/clusters.md#time-limits-and-preemption).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from src.runs.folder import RunFolder

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM) + (
    (signal.SIGUSR2,) if hasattr(signal, "SIGUSR2") else ()
)


class StopRequest:
    """A context manager that turns SIGINT/SIGTERM into a flag while it is active."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._signum: int | None = None
        self._previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals only reach it
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    def _handle(self, signum: int, frame) -> None:
        if self and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.signal_name, self._signum = signal.Signals(signum).name, signum
        log.warning(
            "%s received: stopping at the next step and keeping the last complete epoch "
            "(Ctrl-C again to stop at once)",
            self.signal_name,
        )

    def hand_on(self) -> None:
        """Calls the handler that was there before the run for the signal that stopped it, when
        that handler is Python code (submitit's requeue), not the default or ignore."""
        handler = self._previous.get(self._signum) if self._signum is not None else None
        if callable(handler) and handler is not signal.default_int_handler:
            log.info(
                "handing %s on to %s", self.signal_name, getattr(handler, "__qualname__", handler)
            )
            # The requeue that submitit asks SLURM for sends SIGTERM to the job's processes, its
            # own `scontrol requeue` among them. Ignored meanwhile (children inherit that), the
            # signal can no longer kill scontrol before it returns and fail a requeue that happened.
            term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                handler(self._signum, None)
            finally:
                signal.signal(signal.SIGTERM, term)


class TrainingStopped(Exception):
    """Raised by the training loop once it has stopped on a StopRequest."""

    def __init__(self, message: str, stop: StopRequest | None = None) -> None:
        super().__init__(message)
        self.stop = stop


def stopped_message(stop: StopRequest, epoch: int, run: RunFolder) -> str:
    """How the run stopped, and the command that resumes it."""
    done = run.summary.get("epochs_completed", 0)
    return (
        f"stopped by {stop.signal_name} in epoch {epoch}; "
        f"{run.last_checkpoint_path.relative_to(run.path)} holds epoch {done}, "
        f"so resume with: python train.py resume={run.path}"
        if done
        else f"stopped by {stop.signal_name} before the first epoch ended; start it again (from "
        f"epoch 0, in the same folder) with: python train.py resume={run.path}"
    )


def disk_full_message(run: RunFolder) -> str:
    """The run stopped on a full disk: what to do, resume or start again."""
    done = run.summary.get("epochs_completed", 0) if run.last_checkpoint_path.is_file() else 0
    return f"the disk holding {run.path} is full, so the run stopped; free some space, then " + (
        f"resume it (its checkpoint holds epoch {done}) with: python train.py resume={run.path}"
        if done
        else "start it again (it had not finished an epoch, so from epoch 0, in the same folder) "
        f"with: python train.py resume={run.path}"
    )
