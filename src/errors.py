"""The one exception type for user mistakes: its message is a single sentence naming the setting
and the fix, shown to the user without a traceback; and ``last_line``, for quoting a library's
error in that sentence."""

# Both live in the torch-free deploy package, so that the predictor, which reads image files with
# the same code as the workbench, raises the very class the workbench catches.
from deploy.errors import ConfigError, last_line

__all__ = ["ConfigError", "last_line"]
