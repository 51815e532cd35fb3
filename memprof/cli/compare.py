"""``memprof compare``: profile a grid of methods x sequence lengths x batch sizes and report it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from rich.table import Table

from memprof.cli.app import app, console, err_console


def show_summary(rs, report: Path) -> None:
    """The summary table, a line about failed configurations, and the report's path."""
    from memprof.reporters.table import TEXT_HEADERS, summary_cells, summary_frame

    headers, rows = summary_cells(summary_frame(rs))
    title = f"memprof compare: {', '.join(dict.fromkeys(r.backbone for r in rs.results))}"
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True, pad_edge=False, title=title)
    for h in headers:  # narrow headers, one word a line, so the table fits 80 columns
        label = h.replace("activations", "act.").replace(" reduction vs ft (%)", " −%_vs_ft")
        table.add_column(label.replace(" ", "\n").replace("_", " "), justify="left" if h in TEXT_HEADERS else "right",
                         overflow="fold")
    for row in rows:
        table.add_row(*row, style=None if row[headers.index("status")] == "ok" else "yellow")
    console.print(table)
    failed = [r for r in rs.results if r.status != "ok"]
    if failed:
        console.print(f"[yellow]{len(failed)} of {len(rs.results)} configurations did not finish "
                      "(status and message in the table and in results.json)[/]")
    console.print(f"report: {report}", highlight=False, soft_wrap=True)


class _Bar:
    """The sweep's Progress protocol drawn as a rich progress bar with the current configuration."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.task = progress, None

    def start(self, total: int, done: int) -> None:
        self.task = self.progress.add_task("starting", total=total, completed=done)

    def begin(self, config) -> None:
        self.progress.update(self.task, description=f"{config.method}  seq {config.seq_len}  batch {config.batch_size}")

    def end(self, config, result) -> None:
        if result.status != "ok":
            self.progress.console.print(
                f"[yellow]{config.method} seq {config.seq_len} batch {config.batch_size}: {result.status}: "
                f"{result.message}[/]", highlight=False)
        self.progress.advance(self.task)


def _explicit(**given) -> dict:
    from memprof.sweep import parse_ints, parse_methods

    out = {k: v for k, v in given.items() if v is not None}
    if "methods" in out:
        out["methods"] = parse_methods(out["methods"])
    if "seq_lens" in out:
        out["seq_lens"] = parse_ints(out["seq_lens"], "sequence length", "--seq-lens")
    if "batch_sizes" in out:
        out["batch_sizes"] = parse_ints(out["batch_sizes"], "batch size", "--batch-sizes")
    return out


@app.command("compare")
def compare_cmd(
    backbone: Annotated[str | None, typer.Option(help="Backbone name or config path. (default: bart-large)")] = None,
    methods: Annotated[str | None, typer.Option(help="Comma-separated methods. (default: ft,lora,meft)")] = None,
    seq_lens: Annotated[str | None, typer.Option(help="Comma-separated sequence lengths. (default: 128,256,512)")] = None,
    batch_sizes: Annotated[str | None, typer.Option(help="Comma-separated batch sizes. (default: 8,16,32)")] = None,
    engine: Annotated[str | None, typer.Option(help="fake, cpu or cuda. (default: fake)")] = None,
    target: Annotated[str | None, typer.Option(
        help="Device the fake engine models: cuda or cpu. (default: the engine's)")] = None,
    dtype: Annotated[str | None, typer.Option(help="fp32, bf16, fp16, mixed-bf16 or mixed-fp16. (default: fp32)")] = None,
    attn: Annotated[str | None, typer.Option(help="Attention implementation: eager or sdpa. (default: sdpa)")] = None,
    task: Annotated[str | None, typer.Option(help="Model head. (default: the backbone family's)")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder. (default: reports/<backbone>-<timestamp>)")] = None,
    resume: Annotated[Path | None, typer.Option(
        help="Continue the interrupted sweep in this folder, skipping what is done.")] = None,
    jobs: Annotated[int | None, typer.Option(
        help="Worker processes, each profiling whole methods. (default: one per method up to the CPUs for the "
             "fake engine, 1 otherwise)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the report's path.")] = False,
) -> None:
    """Profile every method x sequence length x batch size; write results.json, CSVs, plots, report.html, summary.md.

    With no options: bart-large; ft, lora, meft; sequence lengths 128, 256, 512; batch sizes 8, 16, 32; fake engine.
    """
    from memprof.errors import MemprofError
    from memprof.reporters import REPORT_FILE, RESULTS_FILE, prepare_out_dir, render_all
    from memprof.result import load_results
    from memprof.sweep import DEFAULTS, Grid, SweepInterrupted, auto_jobs, default_out_dir, point_latest, run_sweep

    explicit = _explicit(backbone=backbone, methods=methods, seq_lens=seq_lens, batch_sizes=batch_sizes,
                         engine=engine, target=target, dtype=dtype, attn=attn, task=task)
    if resume is not None:
        if out is not None and Path(out).resolve() != Path(resume).resolve():
            raise MemprofError(f"--out {str(out)!r} differs from --resume {str(resume)!r}; a resumed sweep writes "
                               "into its own folder, drop --out")
        saved = load_results(Path(resume) / RESULTS_FILE)
        if not saved.options:
            raise MemprofError(f"{str(Path(resume) / RESULTS_FILE)!r} holds no compare options; only a "
                               "`memprof compare` folder can be resumed")
        grid = Grid.from_options({**DEFAULTS, **saved.options, **explicit})
        out_dir = Path(resume)
    else:
        grid = Grid.from_options({**DEFAULTS, **explicit})
        out_dir = Path(out) if out is not None else default_out_dir(grid.name)
        if (out_dir / RESULTS_FILE).is_file():
            raise MemprofError(
                f"{str(out_dir)!r} already holds a results.json; pass --resume {shlex.quote(str(out_dir))} to continue it, "
                "or another --out"
            )

    if jobs is not None and jobs < 1:
        raise MemprofError(f"--jobs {jobs} must be at least 1; pass e.g. --jobs 2, or leave it out for one per method")
    jobs = auto_jobs(grid) if jobs is None else jobs

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    progress = Progress(*columns, console=err_console, disable=quiet, transient=False)
    prepare_out_dir(out_dir)
    if resume is None and out is None:
        point_latest(out_dir)
    try:
        with progress:
            rs = run_sweep(grid, out_dir, resume=resume is not None, progress=_Bar(progress), jobs=jobs)
    except SweepInterrupted as stop:
        err_console.print(
            f"interrupted after {stop.done} of {stop.total} configurations; the results so far are in "
            f"{stop.out_dir / RESULTS_FILE}; resume with: memprof compare --resume {shlex.quote(str(stop.out_dir))}",
            highlight=False, soft_wrap=True,
        )
        raise typer.Exit(130) from None
    try:
        render_all(rs, out_dir)
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted while writing the report; the results are complete in {out_dir / RESULTS_FILE}; "
            f"render them with: memprof report {shlex.quote(str(out_dir / RESULTS_FILE))}",
            highlight=False, soft_wrap=True,
        )
        raise typer.Exit(130) from None
    report = out_dir / REPORT_FILE
    if quiet:
        console.print(str(report), highlight=False, soft_wrap=True)
    else:
        show_summary(rs, report)
