"""meft's version: the installed distribution's (``importlib.metadata``; meft ships in memprof-meft),
or, in a source tree that is not installed, pyproject.toml's. memprof.version re-exports it: one
distribution, one version, and meft imports nothing of memprof."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "memprof-meft"


def _version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that is not installed
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        found = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M) if pyproject.is_file() else None
        return found.group(1) if found else "0+unknown"


__version__ = _version()
