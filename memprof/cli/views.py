"""Rich renderings more than one command prints: the compare summary (``compare``, ``report``)."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.table import Table

from memprof.cli.app import cell, console, say


def print_summary(rs, report: Path, *, quiet: bool = False) -> None:
    """The summary table, a line about configurations that did not finish, and the report's path
    (``quiet``: the path only, and the line about failures on stderr)."""
    failed = sum(r.status != "ok" for r in rs.results)
    note = (f"{failed} of {len(rs.results)} configurations did not finish "
            "(status and message in the table and in results.json)")
    if quiet:
        if failed:
            say(note, style="yellow", err=True)
        say(str(report))
        return
    console.print(summary_table(rs))
    if failed:
        say(note, style="yellow")
    say("report: ", str(report))


def summary_table(rs) -> Table:
    """``reporters.table.summary_cells`` as a rich table with narrow headers (one word a line, so
    that it fits 80 columns); rows that did not finish in yellow. Cells are literal text."""
    from memprof.reporters.table import TEXT_HEADERS, summary_cells, summary_frame

    headers, rows = summary_cells(summary_frame(rs))
    title = cell(f"memprof compare: {', '.join(dict.fromkeys(r.backbone for r in rs.results))}", "table.title")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True, pad_edge=False, title=title)
    for h in headers:
        label = h.replace("activations", "act.").replace(" reduction vs ft (%)", " −%_vs_ft")
        table.add_column(label.replace(" ", "\n").replace("_", " "), justify="left" if h in TEXT_HEADERS else "right",
                         overflow="fold")
    for row in rows:
        table.add_row(*map(cell, row), style=None if row[headers.index("status")] == "ok" else "yellow")
    return table
