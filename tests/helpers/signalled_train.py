"""train.py that sends itself a signal the first time a given function is called, then calls it:
a signal at an exact moment of a search or a run, e.g. just as a trial's job starts.

    python tests/helpers/signalled_train.py src.training.run:run_job SIGTERM --multirun ...
"""

from __future__ import annotations

import functools
import importlib
import os
import runpy
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

where, name = sys.argv.pop(1), sys.argv.pop(1)
module_name, function_name = where.split(":")
module = importlib.import_module(module_name)
function = getattr(module, function_name)
sent = False


@functools.wraps(function)
def signalled(*args, **kwargs):
    global sent
    if not sent:
        sent = True
        os.kill(os.getpid(), getattr(signal, name))
    return function(*args, **kwargs)


setattr(module, function_name, signalled)
sys.argv[0] = str(ROOT / "train.py")
runpy.run_path(sys.argv[0], run_name="__main__")  # as `python train.py ...`, for Hydra
