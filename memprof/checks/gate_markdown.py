"""The memory gate's report as GitHub-flavoured Markdown (``memprof check --markdown``, e.g. into
``$GITHUB_STEP_SUMMARY``); every user-supplied string goes through ``reporters.markdown``'s inert-text
helpers (NOTE [Inert text] there)."""

from __future__ import annotations

from pathlib import Path

from memprof.checks.gate import GateReport, GateRow, format_change, key_label, summary
from memprof.errors import MemprofError
from memprof.reporters.markdown import md_code, md_text
from memprof.results.files import write_atomically
from memprof.units import format_bytes

_MD_VERDICT = {
    "regression": "❌ regression",
    "failed": "❌ failed",
    "improvement": "🟢 improvement",
    "fixed": "🟢 fixed",
    "ok": "✅ ok",
    "unmeasured": "➖ unmeasured",
}


def _md_value(value: int | None, status: str) -> str:
    return format_bytes(value) if value is not None else status


def _md_table(rows: list[GateRow]) -> list[str]:
    lines = ["| configuration | metric | baseline | current | change | verdict |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {md_code(r.label, in_table=True)} | {md_text(r.metric)} | "
            f"{md_text(_md_value(r.baseline, r.baseline_status))} | "
            f"{md_text(_md_value(r.current, r.current_status))} | {md_text(format_change(r))} | "
            f"{md_text(_MD_VERDICT.get(r.verdict, r.verdict))} |"
        )
    return lines


def gate_markdown(report: GateReport, *, update_command: str = "") -> str:
    """The gate's report (``memprof check --markdown``) as GitHub-flavoured Markdown: summary, what
    changed, then every row folded away."""
    lines = ["## memprof memory gate", "", f"**{md_text(summary(report))}**", ""]
    for w in report.warnings:
        lines.append(f"> ⚠️ {md_text(w)}")
    if report.warnings:
        lines.append("")
    changed = [r for r in report.rows if r.verdict not in ("ok", "unmeasured")]
    if changed:
        lines += ["### Changes beyond the tolerance", "", *_md_table(changed), ""]
    if report.improvements and update_command:
        lines += [f"To accept the improvements, update the baseline: {md_code(update_command)}", ""]
    for title, keys in (
        ("Only in the baseline", report.only_baseline),
        ("Only in the current results", report.only_current),
    ):
        if keys:
            lines += [f"### {title}", "", *(f"- {md_code(key_label(k))}" for k in keys), ""]
    lines += ["<details><summary>All comparisons</summary>", "", *_md_table(report.rows), "", "</details>", ""]
    return "\n".join(lines)


def write_gate_markdown(report: GateReport, path: str | Path, *, update_command: str = "") -> Path:
    """``gate_markdown`` written to ``path`` atomically (a failed write leaves the old file whole);
    MemprofError naming it when that fails."""
    path = Path(path)
    try:
        write_atomically(path, gate_markdown(report, update_command=update_command))
    except MemprofError as exc:
        raise MemprofError(f"cannot write the Markdown report to {str(path)!r}: {exc}") from None
    return path
