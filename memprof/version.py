"""memprof's version, at the bottom of the package so that results can record it."""

__version__ = "0.1.0"
