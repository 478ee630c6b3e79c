"""The one exception type users see: the CLI prints its message as a single line."""


class SaganError(Exception):
    """A user-facing failure: bad input, bad params, a missing file. Never a bug."""

    def __init__(self, message: str, hint: str | None = None):
        self.hint = hint
        super().__init__(f"{message} (hint: {hint})" if hint else message)


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (library errors often span many), or its type."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]
