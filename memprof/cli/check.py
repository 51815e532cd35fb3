"""``memprof check``: the memory-regression gate against a committed baseline.

Exit codes: 0 nothing regressed beyond the tolerance, 1 something regressed (or a configuration
that was ok in the baseline now fails), 2 unusable input (from ``memprof.cli.app.run``).
The comparison is ``memprof.checks.gate.compare``; this module only renders it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from memprof.cli.app import app, cell, console, say
from memprof.cli.views import print_json

_STYLE = {
    "regression": "bold red",
    "failed": "bold red",
    "improvement": "green",
    "fixed": "green",
    "ok": "dim",
    "unmeasured": "yellow",
}


def _table(report) -> Table:
    from memprof.checks.gate import format_change
    from memprof.units import format_bytes

    table = Table(title=cell(f"memory gate (tolerance {report.tolerance:.1%})", "table.title"))
    table.add_column("configuration", overflow="fold")
    table.add_column("metric", no_wrap=True)
    for col in ("baseline", "current", "change"):
        table.add_column(col, justify="right")
    table.add_column("verdict")
    last = None
    for r in report.rows:
        style = _STYLE.get(r.verdict, "yellow")
        table.add_row(
            cell(r.label if r.key != last else ""),
            cell(r.metric),
            cell(format_bytes(r.baseline) if r.baseline is not None else r.baseline_status),
            cell(format_bytes(r.current) if r.current is not None else r.current_status),
            cell(format_change(r)),
            cell(r.verdict, style),
        )
        last = r.key
    return table


def _print_report(report, update: str) -> None:
    """The table, then warnings, one-sided configurations, failures, improvements and the summary."""
    from memprof.checks.gate import format_change, key_label, summary

    # Not a terminal (a CI log, a pipe): print the table wide rather than folding every cell (this
    # print only: the console's own width stays free to follow the terminal).
    console.print(_table(report), width=None if console.is_terminal else max(console.width, 150))

    for w in report.warnings:
        say(("warning:", "yellow"), f" {w}")
    for k in report.only_baseline:
        say(f"only in the baseline (not compared): {key_label(k)}")
    for k in report.only_current:
        say(f"only in the current results (not compared): {key_label(k)}")
    for r in report.failures:
        what = (
            f"{r.metric} {format_change(r)}, beyond {report.tolerance:.1%}"
            if r.metric != "status"
            else f"was {r.baseline_status}, now {r.current_status}"
        )
        say((f"{r.verdict}:", "bold red"), f" {r.label}: {what}")
    for r in report.improvements:
        what = f"{r.metric} {format_change(r)}" if r.metric != "status" else f"was {r.baseline_status}, now ok"
        say((f"{r.verdict}:", "green"), f" {r.label}: {what}")
    if report.improvements:
        say(f"to accept the improvements, update the baseline: {update}")
    say(summary(report), style="bold red" if report.failures else "bold green")


@app.command("check")
def check_cmd(
    current: Annotated[
        list[Path],
        typer.Argument(help="Current results: results.json files, folders holding one, or single result JSONs."),
    ],
    baseline: Annotated[Path, typer.Option("--baseline", "-b", help="The committed baseline JSON to compare against.")],
    tolerance: Annotated[str, typer.Option(help="Allowed growth per metric, 0% to 50%, e.g. 2% or 0.5%.")] = "2%",
    metrics: Annotated[
        str, typer.Option(help="Comma-separated Memory fields to compare.")
    ] = "saved_activations,peak_activations,peak",
    markdown: Annotated[
        Path | None,
        typer.Option(help="Also write the report as Markdown here (overwritten), e.g. $GITHUB_STEP_SUMMARY."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON instead of tables.")] = False,
) -> None:
    """Compare CURRENT results with a baseline; exit 1 when a metric grew beyond the tolerance.

    Configurations are matched by backbone, method, sequence length, batch size, dtype, engine and target.

    Improvements are reported with the command that updates the baseline.
    """
    from memprof.checks import gate
    from memprof.checks.gate_markdown import write_gate_markdown
    from memprof.outputs import check_distinct, check_file, results_file
    from memprof.results.result import load_results

    if markdown is not None:  # before reading the results (NOTE [Fail before the work])
        check_file(markdown, "the Markdown report", "--markdown")
        check_distinct({"--baseline": baseline, "CURRENT": map(results_file, current)}, {"--markdown": markdown})
    names = gate.parse_metrics(metrics)
    report = gate.compare(
        gate.load_sources(current), load_results(baseline), tolerance=gate.parse_tolerance(tolerance), metrics=names
    )
    update = gate.update_command(current, baseline)
    if as_json:
        print_json({**report.to_dict(), "update_command": update})
    else:
        _print_report(report, update)
    if markdown is not None:
        write_gate_markdown(report, markdown, update_command=update)
    if report.failures:
        raise typer.Exit(1)
