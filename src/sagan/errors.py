"""The one exception type users see, and the one way to put another exception on its single line."""


class SaganError(Exception):
    """A user-facing failure: bad input, bad params, a missing file. Never a bug."""

    def __init__(self, message: str, hint: str | None = None):
        self.hint = hint
        super().__init__(f"{message} (hint: {hint})" if hint else message)


def one_line(error: BaseException | str, limit: int | None = 200, whole: bool = False) -> str:
    """An exception's message (or a text taken from one) as one line of at most `limit` characters,
    cut with "...", or the exception's type where it has no message. Its first line, since library
    errors put their point first and a trace or advice below it; with `whole`, every line joined,
    for a message that lists its point under a heading (torch's load_state_dict)."""
    text = str(error)
    text = " ".join(text.split()) if whole else (text.splitlines() or [""])[0]
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."
