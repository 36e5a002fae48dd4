"""Handing a stopping signal on to the handler that was there before the run (submitit's requeue):
the SIGTERM that SLURM's requeue sends the job's processes cannot kill the requeue's own call."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from src.training.stopping import StopRequest

# What `scontrol requeue` meets when SLURM carries out the requeue before the call returns: a
# SIGTERM to every process of the job, itself included.
SIGNALLED_CALL = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"]


def previous_handler_that_requeues(calls: list):
    """Like submitit's checkpoint_and_try_requeue: a checked call, then sys.exit."""

    def requeue(signum, frame):
        subprocess.check_call(SIGNALLED_CALL, timeout=60)
        calls.append(signum)
        sys.exit(-1)

    return requeue


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="SIGUSR2 is POSIX-only")
def test_the_requeue_call_survives_the_sigterm_of_the_requeue_and_handlers_come_back():
    calls: list = []
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR2, signal.SIGTERM)}
    signal.signal(signal.SIGUSR2, previous_handler_that_requeues(calls))
    try:
        with StopRequest() as stop:
            stop._handle(signal.SIGUSR2, None)  # the signal, as the run receives it
        assert stop.signal_name == "SIGUSR2"
        with pytest.raises(SystemExit):
            stop.hand_on()
        assert calls == [signal.SIGUSR2]
        assert signal.getsignal(signal.SIGTERM) is before[signal.SIGTERM]
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_without_the_sigterm_shield_that_call_dies():
    """The check above fails for the right reason: the same call, unshielded, is killed."""
    with pytest.raises(subprocess.CalledProcessError) as died:
        subprocess.check_call(SIGNALLED_CALL, timeout=60)
    assert died.value.returncode == -signal.SIGTERM


def test_a_default_handler_is_not_called():
    """Without a Python handler before the run (no submitit), hand_on does nothing."""
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with StopRequest() as stop:
            stop._handle(signal.SIGTERM, None)
        stop.hand_on()  # calling the default action would end this process
        assert stop.signal_name == "SIGTERM"
    finally:
        signal.signal(signal.SIGTERM, before)
