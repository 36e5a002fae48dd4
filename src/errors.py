"""The one exception type for user mistakes: its message is a single sentence naming the setting
and the fix, shown to the user without a traceback."""


class ConfigError(ValueError):
    """A setting, path or input the user can fix."""
