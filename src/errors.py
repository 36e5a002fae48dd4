"""The one exception type for user mistakes: its message is a single sentence naming the setting
and the fix, shown to the user without a traceback."""

# Defined in the torch-free deploy package, so that the predictor, which reads image files with
# the same code as the workbench, raises the very class the workbench catches.
from deploy.errors import ConfigError

__all__ = ["ConfigError", "last_line"]


def last_line(err: BaseException) -> str:
    """The most specific line of a multi-line library error (often the underlying cause)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
