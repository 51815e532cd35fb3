"""memprof's version, at the bottom of the package so that results can record it.

memprof and meft ship in one distribution (memprof-meft), so they share one version, read by
``meft.version`` (the installed distribution's, or pyproject.toml's in a source tree that is not
installed): a release needs one edit, in pyproject.toml.
"""

from __future__ import annotations

from meft.version import DISTRIBUTION, __version__

__all__ = ["DISTRIBUTION", "__version__"]
