"""Stopping a run cleanly on Ctrl-C (SIGINT) or SIGTERM.

The first signal only raises a flag that the training loop reads between steps, so the run stops at
a step boundary and leaves a consistent checkpoint. A second Ctrl-C stops at once; even then the
files on disk are whole, because every one of them is written atomically.
"""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A context manager that turns SIGINT/SIGTERM into a flag while it is active."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
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
        self.signal_name = signal.Signals(signum).name
        log.warning(
            "%s received: stopping at the next step and keeping the last complete epoch "
            "(Ctrl-C again to stop at once)", self.signal_name,
        )


class TrainingStopped(Exception):
    """Raised by the training loop once it has stopped on a StopRequest."""
