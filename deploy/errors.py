"""The one exception type for user mistakes (``src.errors`` hands the same class to the
workbench): its message is a single sentence naming the setting and the fix, shown to the user
without a traceback. It lives here, below ``src/``, so the torch-free predictor raises it too.
``last_line``, which quotes a library's error in such a sentence, is here for the same reason, and
so is ``DamagedFile``, the sentence for a file that is there but cannot be read whole."""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A setting, path or input the user can fix."""


class DamagedFile(ConfigError):
    """A file a command needs is there but cannot be read whole (empty, cut short, or not what
    its name says): "<path> is damaged (<what>); <what to do>". Nothing has been written yet."""

    def __init__(self, path: str | Path, what: str, fix: str) -> None:
        self.path, self.what, self.fix = Path(path), what, fix
        super().__init__(f"{path} is damaged ({what}); {fix}.")


def last_line(err: BaseException) -> str:
    """The most specific line of a multi-line library error (often the underlying cause)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
