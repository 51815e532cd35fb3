"""The one exception type of memprof.

Every message names the offending value, the constraint it broke and the fix, in one line, so that
the CLI can print it as is and exit with code 2 (see ``memprof.cli``).
"""


class MemprofError(ValueError):
    """Bad input or an unusable configuration; the message is one line meant for the user."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an exception from a library, on one line however the library wraps it."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__
