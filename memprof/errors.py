"""The one exception type of memprof.

Every message names the offending value, the constraint it broke and the fix, in one line, so that
the CLI can print it as is and exit with code 2 (see ``memprof.cli``).
"""


class MemprofError(ValueError):
    """Bad input or an unusable configuration; the message is one line meant for the user."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM (a cancelled CI job, ``timeout``), raised by the CLI's handler where Ctrl-C raises
    KeyboardInterrupt, so that every path that keeps partial work on Ctrl-C keeps it on SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


def interrupt_exit_code(interrupt: BaseException) -> int:
    """The shell's code for a process stopped by a signal, 128 + its number: 143 for SIGTERM
    (``Interrupted``), 130 for Ctrl-C (a plain KeyboardInterrupt is SIGINT's)."""
    import signal

    return 128 + int(getattr(interrupt, "signum", signal.SIGINT))


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an exception from a library, on one line however the library wraps it."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__
