"""Markdown: ``summary.md`` (the summary table, ready to paste into a README or a pull request) and the
memory gate's report (``memprof check --markdown``, e.g. into ``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memprof.errors import MemprofError
from memprof.gate import GateReport, GateRow, format_change, key_label, summary
from memprof.reporters.table import TEXT_HEADERS, summary_data, summary_sentence
from memprof.result import ResultSet
from memprof.units import format_bytes


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_escape, headers)) + " |"]
    lines.append("|" + "|".join("---" if h in TEXT_HEADERS else "---:" for h in headers) + "|")
    lines += ["| " + " | ".join(map(_escape, row)) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(data: dict[str, Any]) -> str:
    lines = [f"## memprof compare: {data['about']['backbone']}", "", summary_sentence(data), ""]
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


_MD_VERDICT = {"regression": "❌ regression", "failed": "❌ failed", "improvement": "🟢 improvement",
               "fixed": "🟢 fixed", "ok": "✅ ok", "unmeasured": "➖ unmeasured"}


def _md_value(value: int | None, status: str) -> str:
    return format_bytes(value) if value is not None else status


def _md_table(rows: list[GateRow]) -> list[str]:
    lines = ["| configuration | metric | baseline | current | change | verdict |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| `{r.label}` | {r.metric} | {_md_value(r.baseline, r.baseline_status)} | "
            f"{_md_value(r.current, r.current_status)} | {format_change(r)} | {_MD_VERDICT.get(r.verdict, r.verdict)} |"
        )
    return lines


def gate_markdown(report: GateReport, *, update_command: str = "") -> str:
    """The gate's report (``memprof check --markdown``) as GitHub-flavoured Markdown: summary, what changed, then every row folded away."""
    lines = ["## memprof memory gate", "", f"**{summary(report)}**", ""]
    for w in report.warnings:
        lines.append(f"> ⚠️ {w}")
    if report.warnings:
        lines.append("")
    changed = [r for r in report.rows if r.verdict not in ("ok", "unmeasured")]
    if changed:
        lines += ["### Changes beyond the tolerance", "", *_md_table(changed), ""]
    if report.improvements and update_command:
        lines += [f"To accept the improvements, update the baseline: `{update_command}`", ""]
    for title, keys in (("Only in the baseline", report.only_baseline), ("Only in the current results", report.only_current)):
        if keys:
            lines += [f"### {title}", "", *(f"- `{key_label(k)}`" for k in keys), ""]
    lines += ["<details><summary>All comparisons</summary>", "", *_md_table(report.rows), "", "</details>", ""]
    return "\n".join(lines)


def write_gate_markdown(report: GateReport, path: str | Path, *, update_command: str = "") -> Path:
    """``gate_markdown`` written to ``path`` (overwritten); MemprofError naming it when that fails."""
    path = Path(path)
    try:
        path.write_text(gate_markdown(report, update_command=update_command))
    except OSError as exc:
        raise MemprofError(
            f"cannot write the Markdown report to {str(path)!r} ({exc.strerror}); pass a writable path"
        ) from None
    return path
