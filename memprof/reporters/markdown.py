"""``summary.md``: the summary table in Markdown, ready to paste into a README or a pull request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memprof.reporters.table import TEXT_HEADERS, describe, headline_frame, largest_config, summary_cells, summary_frame
from memprof.result import ResultSet


def summary_data(rs: ResultSet) -> dict[str, Any]:
    """Everything ``summary.md`` shows, as plain data (formatted cells)."""
    frame = summary_frame(rs)
    statuses = frame["status"].value_counts().to_dict()
    largest = largest_config(rs)
    return {
        "about": describe(rs),
        "counts": {"total": len(frame), **{s: int(n) for s, n in statuses.items()}},
        "largest": largest,
        "headline": summary_cells(headline_frame(rs), per_config=False),
        "table": summary_cells(frame),
        "command": rs.command,
    }


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_escape, headers)) + " |"]
    lines.append("|" + "|".join("---" if h in TEXT_HEADERS else "---:" for h in headers) + "|")
    lines += ["| " + " | ".join(map(_escape, row)) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(data: dict[str, Any]) -> str:
    about, counts = data["about"], data["counts"]
    failed = ", ".join(f"{n} {s}" for s, n in counts.items() if s not in ("total", "ok"))
    lines = [
        f"## memprof compare: {about['backbone']}",
        "",
        f"Engine {about['engine']}, target {about['target']}, dtype {about['dtype']}, attention {about['attention']}; "
        f"{counts['total']} configurations, {counts.get('ok', 0)} ok" + (f", {failed}" if failed else "") + ".",
        "",
    ]
    if data["largest"] is not None:
        seq, batch = data["largest"]
        lines += [f"### At the largest configuration (sequence length {seq}, batch size {batch})", ""]
        lines += [markdown_table(*data["headline"]), ""]
    lines += ["### Every configuration", "", markdown_table(*data["table"]), ""]
    lines += ["Reductions are against `ft` at the same sequence length and batch size.", ""]
    if data["command"]:
        lines += ["Reproduce with:", "", "```sh", data["command"], "```", ""]
    return "\n".join(lines)


def render(rs: ResultSet, outfile: str | Path) -> Path:
    path = Path(outfile)
    path.write_text(to_markdown(summary_data(rs)))
    return path
