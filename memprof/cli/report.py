"""``memprof report``: render the tables, plots, HTML report and Markdown summary again from a
saved results.json (no model runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memprof.cli.app import app
from memprof.cli.options import Quiet
from memprof.cli.views import print_summary


@app.command("report")
def report_cmd(
    results: Annotated[Path, typer.Argument(help="A results.json written by `memprof compare` (or a profile's JSON).")],
    out: Annotated[Path | None, typer.Option(help="Output folder. (default: the results file's folder)")] = None,
    quiet: Quiet = False,
) -> None:
    """Write results.csv, layers.csv, the PNG plots, report.html and summary.md from saved results."""
    from memprof.outputs import check_dir
    from memprof.reporters import render_saved

    check_dir(out if out is not None else results.parent, "--out")  # before reading the results
    rs, report = render_saved(results, out)
    print_summary(rs, report, quiet=quiet)
