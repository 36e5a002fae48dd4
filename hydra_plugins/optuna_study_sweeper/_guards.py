"""What runs beside a search's trials: their heartbeats in the storage, and the signal handler
that turns SIGTERM into an orderly stop of the search. (A leading underscore: Hydra's plugin scan
skips it.)"""

from __future__ import annotations

import signal
import threading
from typing import Any

import optuna


class SearchInterrupted(KeyboardInterrupt):
    """SIGTERM outside a training run: a KeyboardInterrupt, so that Hydra's job wrapper, which
    catches Exception, does not take it for the trial's own failure."""


class StopOnSignal:
    """While the search runs, SIGTERM raises SearchInterrupted (and Ctrl-C, KeyboardInterrupt,
    as always) wherever the search is: asking, launching, telling. A run that is training has
    its own handlers (src/training/stopping.py): it stops at a step boundary, says interrupted,
    and then hands the signal on to this one, without a frame: that call is left alone, as the
    run's status tells the search the rest."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # signals only reach it
            self.previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, self)}
        return self

    def __call__(self, signum: int, frame: Any) -> None:
        if frame is not None:
            raise SearchInterrupted(signal.Signals(signum).name)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class Heartbeat:
    """Records the running trials' heartbeats every ``interval`` seconds while their jobs run."""

    def __init__(self, study: optuna.Study, trials: list[optuna.Trial], interval: int) -> None:
        self.storage, self.trials, self.interval = study._storage, trials, interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            for trial in self.trials:
                self.storage.record_heartbeat(trial._trial_id)
            if self.stopped.wait(self.interval):
                return

    def __enter__(self) -> Heartbeat:
        if self.interval:  # only a stored study has heartbeats
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()
