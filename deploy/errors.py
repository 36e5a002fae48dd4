"""The one exception type for user mistakes (``src.errors`` hands the same class to the
workbench): its message is a single sentence naming the setting and the fix, shown to the user
without a traceback. It lives here, below ``src/``, so the torch-free predictor raises it too.
``last_line``, which quotes a library's error in such a sentence, is here for the same reason."""


class ConfigError(ValueError):
    """A setting, path or input the user can fix."""


def last_line(err: BaseException) -> str:
    """The most specific line of a multi-line library error (often the underlying cause)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
