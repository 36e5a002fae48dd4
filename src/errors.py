"""The exceptions whose message is one sentence for the user, shown without a traceback.

``ConfigError``: a setting, path or input the user can fix; the sentence names it and the fix.
``DamagedFile``: a ConfigError for a file that is there but cannot be read whole (empty, cut
short, garbage): "<path> is damaged (<what>); <what to do>" (docs: guide/reliability.md).
``RunFailure``: a run that ended on something other than a setting, with what to do next:
``Diverged`` (the loss stopped being a number) and ``OutOfDiskSpace`` (its disk filled up).

``last_line`` quotes a library's error in such a sentence, and ``refusal_reason`` torch.load's.
"""

# ConfigError, DamagedFile and last_line live in the torch-free deploy package, so that the
# predictor, which reads image files with the same code as the workbench, raises the very class
# the workbench catches.
from deploy.errors import ConfigError, DamagedFile, last_line

__all__ = [
    "ConfigError",
    "DamagedFile",
    "Diverged",
    "OutOfDiskSpace",
    "RunFailure",
    "last_line",
    "refusal_reason",
]


class RunFailure(Exception):
    """A run stopped by what happened while it trained, not by a setting; its files are whole."""


class Diverged(RunFailure):
    """The training loss became NaN or infinite; the best weights so far are kept."""


class OutOfDiskSpace(RunFailure):
    """The disk holding the run folder filled up; every file written before is whole."""


def refusal_reason(err: BaseException) -> str:
    """What torch.load(weights_only=True) refused (e.g. "unsupported GLOBAL posix.system"),
    without its advice to load again with weights_only=False, which would run that code."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reasons = [line for line in lines if "weights_only" not in line and "Weights only" not in line]
    return reasons[0] if reasons else "objects that are not tensors"
