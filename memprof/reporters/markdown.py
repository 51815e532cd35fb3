"""Markdown: ``summary.md`` (the summary table, ready to paste into a README or a pull request), and
the inert-text helpers the memory gate's report (``memprof.checks.gate_markdown``) shares.

NOTE [Inert text]: backbone names, messages, labels and commands come from users and from
exceptions; GitHub renders this Markdown, HTML included. Every such string goes through ``md_text``
(prose and table cells: HTML escaped, Markdown punctuation backslash-escaped, one line), ``md_code``
(a code span that no backtick in the text can close) or ``_fence`` (a fenced block no line can end),
so that it shows as the characters it is and never as markup, a link, an HTML tag or a table column.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from memprof.reporters import exactness
from memprof.reporters.base import SUMMARY_FILE, Extras
from memprof.reporters.table import TEXT_HEADERS, summary_data, summary_sentence
from memprof.results.files import write_atomically
from memprof.results.result import ResultSet

#: what Markdown (GitHub's included) may read as syntax anywhere in a line: backslash, code,
#: emphasis, links, strikethrough, table columns; ``_`` only where it could open or close emphasis
#: (a run of it between two letters or digits, as in ``saved_activations``, never does)
_MD_SPECIAL = re.compile(r"[\\`*\[\]~|]|(?<![^\W_])_+|_+(?![^\W_])")


def md_text(text: Any) -> str:
    """``text`` as inert Markdown on one line (NOTE [Inert text]): ``&``, ``<``, ``>`` as entities,
    the characters of ``_MD_SPECIAL`` backslash-escaped."""
    one_line = " ".join(str(text).splitlines())
    return _MD_SPECIAL.sub(lambda m: "".join("\\" + c for c in m.group()), html.escape(one_line, quote=False))


def md_code(text: Any, *, in_table: bool = False) -> str:
    """``text`` as a code span on one line that no backtick in it can close; ``in_table`` escapes
    ``|`` (a column break even inside a code span in a GitHub table)."""
    text = " ".join(str(text).splitlines())
    ticks = "`" * (max(map(len, re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    span = f"{ticks}{pad}{text}{pad}{ticks}"
    return span.replace("|", "\\|") if in_table else span


def _fence(text: str, info: str = "") -> list[str]:
    """``text`` as a fenced code block whose fence is longer than any backtick run in it."""
    ticks = "`" * max(3, max(map(len, re.findall(r"`+", text)), default=0) + 1)
    return [f"{ticks}{info}", *text.splitlines(), ticks]


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(md_text, headers)) + " |"]
    lines.append("|" + "|".join("---" if h in TEXT_HEADERS else "---:" for h in headers) + "|")
    lines += ["| " + " | ".join(map(md_text, row)) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(data: dict[str, Any]) -> str:
    lines = [f"## memprof compare: {md_text(data['about']['backbone'])}", "", md_text(summary_sentence(data)), ""]
    if data["largest"] is not None:
        seq, batch = data["largest"]
        lines += [f"### At the largest configuration (sequence length {seq}, batch size {batch})", ""]
        lines += [markdown_table(*data["headline"]), ""]
    lines += ["### Every configuration", "", markdown_table(*data["table"]), ""]
    lines += ["Reductions are against `ft` at the same sequence length and batch size.", ""]
    if (cost := data["exactness"]) is not None:
        lines += [f"### {exactness.TITLE}", "", md_text(exactness.INTRO), "", markdown_table(*cost["table"]), ""]
        if note := exactness.skipped_note(cost):
            lines += [md_text(note), ""]
    if data["command"]:
        lines += ["Reproduce with:", "", *_fence(data["command"], "sh"), ""]
    return "\n".join(lines)


def render(rs: ResultSet, outfile: str | Path) -> Path:
    path = Path(outfile)
    write_atomically(path, to_markdown(summary_data(rs)))
    return path


def write(rs: ResultSet, out: Path, extras: Extras) -> dict[str, Path]:
    """The reporter interface (NOTE [ One reporter interface ]): ``summary.md``."""
    return {SUMMARY_FILE: render(rs, out / SUMMARY_FILE)}
