"""Rich renderings more than one command prints: the compare summary (``compare``, ``report``)."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.table import Table

from memprof.cli.app import console


def print_summary(rs, report: Path, *, quiet: bool = False) -> None:
    """The summary table, a line about configurations that did not finish, and the report's path
    (``quiet``: the path only)."""
    if quiet:
        console.print(str(report), highlight=False, soft_wrap=True)
        return
    console.print(summary_table(rs))
    failed = [r for r in rs.results if r.status != "ok"]
    if failed:
        console.print(f"[yellow]{len(failed)} of {len(rs.results)} configurations did not finish "
                      "(status and message in the table and in results.json)[/]")
    console.print(f"report: {report}", highlight=False, soft_wrap=True)


def summary_table(rs) -> Table:
    """``reporters.table.summary_cells`` as a rich table with narrow headers (one word a line, so
    that it fits 80 columns); rows that did not finish in yellow."""
    from memprof.reporters.table import TEXT_HEADERS, summary_cells, summary_frame

    headers, rows = summary_cells(summary_frame(rs))
    title = f"memprof compare: {', '.join(dict.fromkeys(r.backbone for r in rs.results))}"
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True, pad_edge=False, title=title)
    for h in headers:
        label = h.replace("activations", "act.").replace(" reduction vs ft (%)", " −%_vs_ft")
        table.add_column(label.replace(" ", "\n").replace("_", " "), justify="left" if h in TEXT_HEADERS else "right",
                         overflow="fold")
    for row in rows:
        table.add_row(*row, style=None if row[headers.index("status")] == "ok" else "yellow")
    return table
