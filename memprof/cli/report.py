"""``memprof report``: render the tables, plots, HTML report and Markdown summary again from a
saved results.json (no model runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memprof.cli.app import app, console


@app.command("report")
def report_cmd(
    results: Annotated[Path, typer.Argument(help="A results.json written by `memprof compare` (or a profile's JSON).")],
    out: Annotated[Path | None, typer.Option(help="Output folder. (default: the results file's folder)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the report's path.")] = False,
) -> None:
    """Write results.csv, layers.csv, the PNG plots, report.html and summary.md from saved results."""
    from memprof.cli.compare import show_summary
    from memprof.errors import MemprofError
    from memprof.reporters import REPORT_FILE, RESULTS_FILE, prepare_out_dir, render_all
    from memprof.result import load_results, write_json

    rs = load_results(results)
    out_dir = prepare_out_dir(out if out is not None else Path(results).parent)
    saved = out_dir / RESULTS_FILE
    if not saved.exists():
        write_json(rs, saved)  # the folder then holds everything its report shows
    elif not saved.samefile(results):
        raise MemprofError(
            f"{str(out_dir)!r} already holds another results.json; pass an --out folder without one, "
            f"or the folder of {str(results)!r}"
        )
    render_all(rs, out_dir)
    report = out_dir / REPORT_FILE
    if quiet:
        console.print(str(report), highlight=False, soft_wrap=True)
    else:
        show_summary(rs, report)
