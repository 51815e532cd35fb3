"""The one exception type of meft.

Every message is one line that names the offending value, the constraint it broke and the fix, so
that a command line can print it as is (memprof turns it into exit code 2).
"""


class MEFTError(ValueError):
    """Bad input to meft: an invalid config, an unsupported model, or a failed numerical check."""
