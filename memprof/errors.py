"""The one exception type of memprof.

Every message names the offending value, the constraint it broke and the fix, in one line, so that
the CLI can print it as is and exit with code 2 (see ``memprof.cli``).
"""


class MemprofError(ValueError):
    """Bad input or an unusable configuration; the message is one line meant for the user."""
