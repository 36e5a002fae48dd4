"""The one exception type for user mistakes (``src.errors`` hands the same class to the
workbench): its message is a single sentence naming the setting and the fix, shown to the user
without a traceback. It lives here, below ``src/``, so the torch-free predictor raises it too."""


class ConfigError(ValueError):
    """A setting, path or input the user can fix."""
