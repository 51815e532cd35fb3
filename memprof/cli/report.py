"""``memprof report``: render the tables, plots, HTML report and Markdown summary again from a
saved results.json (no model runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memprof.cli.app import app
from memprof.cli.options import Quiet
from memprof.cli.views import print_summary


def written_names() -> list[str]:
    """The files a report writes into its folder, but results.json: ``render_saved`` never rewrites
    that one, so a report into the folder of its own results.json is allowed."""
    from memprof.reporters import REPORT_FILE, SUMMARY_FILE
    from memprof.reporters.plots import PLOTS

    return ["results.csv", "layers.csv", *PLOTS, REPORT_FILE, SUMMARY_FILE]


@app.command("report")
def report_cmd(
    results: Annotated[Path, typer.Argument(help="A results.json written by `memprof compare` (or a profile's JSON).")],
    out: Annotated[Path | None, typer.Option(help="Output folder. (default: the results file's folder)")] = None,
    quiet: Quiet = False,
) -> None:
    """Write results.csv, layers.csv, the PNG plots, report.html and summary.md from saved results."""
    from memprof.outputs import check_dir, check_distinct
    from memprof.reporters import render_saved
    from memprof.sweep.closed_form import load_formulas

    folder = check_dir(out if out is not None else results.parent, "--out")  # before reading the results
    check_distinct({"RESULTS": results}, {"--out": [folder / name for name in written_names()]})
    # the formulas a compare wrote beside its results.json: the report's closed-form section
    rs, report = render_saved(results, out, formulas=load_formulas(results.parent))
    print_summary(rs, report, quiet=quiet)
