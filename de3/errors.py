"""The one exception type for problems a user can fix (bad config, missing files, bad rows)."""


class De3Error(Exception):
    """A user-facing error: `run.py` prints its message alone, without a traceback."""


def find_user_error(error: BaseException) -> De3Error | None:
    """The De3Error behind `error`, if any (Hydra's `instantiate` wraps what a target raises)."""
    while error is not None:
        if isinstance(error, De3Error):
            return error
        error = error.__cause__ or error.__context__
    return None
