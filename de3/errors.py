"""The one exception type for problems a user can fix (bad config, missing files, bad rows)."""


class De3Error(Exception):
    """A user-facing error: `run.py` prints its message alone, without a traceback."""
