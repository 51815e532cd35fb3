"""Renderings more than one command prints: the compare summary (``compare``, ``report``), listings
(``backbones``, ``methods``) and JSON (every ``--json``).

NOTE [Listings keep names whole]: a name cut short (``roberta-b…``) cannot be read back by a script or
typed by a person. Piped or redirected (stdout not a terminal), a listing is plain columns padded
with spaces, one row a line, whatever the width; in a terminal it is a table when the table, at
the terminal's width, shows every word of every cell whole (the name column never wraps, the others
wrap between words), and otherwise one block per row (the name on its own line, then each field
indented), which fits any width. Colours follow rich's rules: none when NO_COLOR is set (bold and
italic stay) or when stdout is not a terminal.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Container, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from memprof.cli.app import cell, console, say


def print_summary(rs, path: Path, *, quiet: bool = False, what: str = "report") -> None:
    """The summary table, a line about configurations that did not finish, and the ``path`` of
    what was written (``what``: "report", or "results" for results.json alone); ``quiet``: the path
    only, and the line about failures on stderr."""
    failed = sum(r.status != "ok" for r in rs.results)
    note = (
        f"{failed} of {len(rs.results)} configurations did not finish "
        "(status and message in the table and in results.json)"
    )
    if quiet:
        if failed:
            say(note, style="yellow", err=True)
        say(str(path))
        return
    console.print(summary_table(rs))
    if failed:
        say(note, style="yellow")
    say(f"{what}: ", str(path))


def summary_table(rs) -> Table:
    """``reporters.table.summary_cells`` as a rich table with narrow headers (one word a line, so
    that it fits 80 columns); rows that did not finish in yellow. Cells are literal text."""
    from memprof.reporters.table import TEXT_HEADERS, summary_cells, summary_frame

    headers, rows = summary_cells(summary_frame(rs))
    title = cell(f"memprof compare: {', '.join(dict.fromkeys(r.backbone for r in rs.results))}", "table.title")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True, pad_edge=False, title=title)
    for h in headers:
        label = h.replace("activations", "act.").replace(" reduction vs ft (%)", " −%_vs_ft")
        table.add_column(
            label.replace(" ", "\n").replace("_", " "),
            justify="left" if h in TEXT_HEADERS else "right",
            overflow="fold",
        )
    for row in rows:
        table.add_row(*map(cell, row), style=None if row[headers.index("status")] == "ok" else "yellow")
    return table


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout: literal, uncoloured, one document (``--json``)."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def print_listing(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Container[str] = ()
) -> None:
    """Rows of text cells under ``headers``, the first column (the name) never cut or wrapped
    (NOTE [Listings keep names whole]); ``right``: headers of right-aligned columns."""
    if not console.is_terminal:
        widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
        for line in (headers, *rows):
            cells = [c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(line, widths, headers)]
            sys.stdout.write("  ".join(cells).rstrip() + "\n")
        return
    table = Table(
        title=cell(title, "table.title"),
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 0),
        pad_edge=False,
        collapse_padding=True,
    )
    for i, h in enumerate(headers):
        table.add_column(h, justify="right" if h in right else "left", no_wrap=i == 0, overflow="fold")
    for row in rows:
        table.add_row(*map(cell, row))
    if _words_whole(table, rows):
        console.print(table)
        return
    say(title, style="table.title")
    for row in rows:
        say((row[0], "bold"))
        for h, value in list(zip(headers, row))[1:]:
            say(f"  {h}: {value}")


def _words_whole(table: Table, rows: Sequence[Sequence[str]]) -> bool:
    """Whether ``table`` at the terminal's width shows every word of every cell whole: rich folds a
    cell (and narrows even an unwrapped column) when the columns cannot give way enough."""
    plain = Console(width=console.width, color_system=None, file=io.StringIO())
    with plain.capture() as captured:
        plain.print(table)
    shown = set(captured.get().split())
    return all(word in shown for row in rows for value in row for word in value.split())
