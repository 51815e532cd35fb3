"""Reporters: turn a saved ResultSet into tables, plots, an HTML page and a Markdown summary.

They read only ``memprof.results.result`` objects and never run a model (memray's shape: each reporter
has functions returning plain data, which tests assert exactly, and a ``render``; ``write`` is the
one interface ``render_all`` calls: NOTE [ One reporter interface ] in base.py).

    table.py     results.csv, layers.csv and the summary table shared by every view
    exactness.py the section "What exactness costs": exact MEFT beside its float twin
    plots.py     the PNG plots (matplotlib Agg; canvas.py: what the figures share)
    timeline.py  timeline.png: live memory through one step, stacked by part, per method
    html.py      report.html, self-contained
    markdown.py  summary.md
    closed_form.py, fit_plot.py  the report's closed-form section · ``memprof fit --plot``
"""

from __future__ import annotations

import importlib
import os
import shlex
from pathlib import Path

from memprof.errors import MemprofError
from memprof.reporters.base import REPORT_FILE, RESULTS_FILE, SUMMARY_FILE, Extras, Reporter
from memprof.results.files import WriteFailed
from memprof.results.result import ResultSet

#: the reporters ``render_all`` runs, in this order (html embeds the PNGs plots has just drawn)
REPORTERS = ("table", "plots", "html", "markdown")


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create the output folder (parents too); MemprofError, naming it, when it or a parent is a
    file, when it cannot be created (a read-only parent, say) or when it cannot be written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MemprofError(f"output directory {str(out)!r} is a file; pass --out with a folder path (new or existing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise MemprofError(
            f"output directory {str(out)!r} cannot be created because part of its path is a file; pass another --out"
        ) from None
    except OSError as exc:
        raise MemprofError(
            f"output directory {str(out)!r} cannot be created ({exc.strerror or exc}); pass an --out in a folder "
            "you can write to"
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise MemprofError(f"output directory {str(out)!r} is not writable; pass an --out in a folder you can write to")
    return out


def render_saved(results: str | Path, out_dir: str | Path | None = None, formulas=()) -> tuple[ResultSet, Path]:
    """Render every view of a saved results file into ``out_dir`` (default: the file's folder):
    (the results, the report's path). The folder ends up holding the results.json its report
    shows: a copy is written there unless it already holds another one (MemprofError).
    ``formulas`` (``Formula``s, e.g. those a compare wrote beside the results) add the report's
    closed-form section."""
    from memprof.results.result import load_results, write_json

    rs = load_results(results)
    out = prepare_out_dir(out_dir if out_dir is not None else Path(results).parent)
    saved = out / RESULTS_FILE
    if not saved.exists():
        write_json(rs, saved)
    elif not saved.samefile(results):
        raise MemprofError(
            f"{str(out)!r} already holds another results.json; pass an --out folder without one, "
            f"or the folder of {str(results)!r}"
        )
    render_all(rs, out, formulas=formulas)
    return rs, out / REPORT_FILE


def render_all(rs: ResultSet, out_dir: str | Path, formulas=()) -> dict[str, Path]:
    """Write every view of ``rs`` into ``out_dir`` (created if missing); returns {file name: path}.
    ``formulas`` (``Formula``s) add the report's closed-form section. A file that cannot be written
    stops it with one MemprofError line (NOTE [ A report that cannot be written ])."""
    out = prepare_out_dir(out_dir)
    extras = Extras(formulas=tuple(formulas))
    paths: dict[str, Path] = {}
    for i, name in enumerate(REPORTERS):
        reporter: Reporter = importlib.import_module(f"memprof.reporters.{name}")
        try:
            paths.update(reporter.write(rs, out, extras))
        except WriteFailed as exc:
            raise _unfinished(out, exc, written=sorted(p.name for p in paths.values()), left=REPORTERS[i:]) from None
    return paths


# NOTE [ A report that cannot be written ]
# Every view is written through a temporary file renamed over the old one (``atomic_output``,
# ``write_atomically``), so a full disk or a read-only file never leaves a truncated report or
# plot: each file is its old self or its whole new self. The failure is one line that says what is
# safe (results.json, written before any view), which views were written and which were not, and
# the command that writes them once there is room: ``memprof report <results.json>``.


def _unfinished(out: Path, exc: WriteFailed, written: list[str], left: tuple[str, ...]) -> MemprofError:
    saved = out / RESULTS_FILE
    where = f"the results in {str(saved)!r} are complete; " if saved.is_file() else ""
    done = f"written: {', '.join(written)}; " if written else ""
    return MemprofError(
        f"cannot write {str(exc.path)!r} ({exc.reason}); {where}{done}not written: the {', '.join(left)} views; "
        f"free some space, then write them with: memprof report {shlex.quote(str(saved))}"
    )


__all__ = [
    "REPORTERS",
    "REPORT_FILE",
    "RESULTS_FILE",
    "SUMMARY_FILE",
    "Extras",
    "prepare_out_dir",
    "render_all",
    "render_saved",
]
