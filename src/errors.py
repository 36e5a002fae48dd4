"""The one exception type for user mistakes: its message is a single sentence naming the setting
and the fix, shown to the user without a traceback; ``last_line``, for quoting a library's error in
that sentence, and ``refusal_reason`` for torch.load's."""

# Both live in the torch-free deploy package, so that the predictor, which reads image files with
# the same code as the workbench, raises the very class the workbench catches.
from deploy.errors import ConfigError, last_line

__all__ = ["ConfigError", "last_line", "refusal_reason"]


def refusal_reason(err: BaseException) -> str:
    """What torch.load(weights_only=True) refused (e.g. "unsupported GLOBAL posix.system"),
    without its advice to load again with weights_only=False, which would run that code."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reasons = [line for line in lines if "weights_only" not in line and "Weights only" not in line]
    return reasons[0] if reasons else "objects that are not tensors"
