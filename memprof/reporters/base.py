"""What every reporter shares: the interface ``render_all`` calls, what a reporter may read besides
the results, and the names of the files a report folder holds.

NOTE [ One reporter interface ]
A reporter is a module of ``memprof.reporters`` with ``write(rs, out, extras) -> {file name: path}``
(the ``Reporter`` protocol): it reads the ``ResultSet`` and the ``Extras`` and writes its files into
``out``, which exists. ``memprof.reporters.REPORTERS`` lists the modules ``render_all`` runs, in
order; adding a reporter is one module and one entry there (docs/extending.md). Reporters never run
a model and never import the engines (tests/test_layering.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from memprof.results.result import ResultSet

RESULTS_FILE = "results.json"
REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.md"


@dataclass(frozen=True)
class Extras:
    """What a reporter may read besides the results: ``formulas`` (``Formula``s, as ``compare``
    writes them) add the closed-form section."""

    formulas: tuple[Any, ...] = ()


class Reporter(Protocol):
    def write(self, rs: ResultSet, out: Path, extras: Extras) -> dict[str, Path]: ...
