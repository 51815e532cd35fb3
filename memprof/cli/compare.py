"""``memprof compare``: profile a grid of methods x sequence lengths x batch sizes and report it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from memprof.cli.app import app, err_console, interrupted, say
from memprof.cli.options import (
    DEFAULT,
    GridAttn,
    GridBackbone,
    GridBatchSizes,
    GridDtype,
    GridEngine,
    GridLoss,
    GridMethods,
    GridSeqLens,
    GridStep,
    GridTarget,
    GridTask,
    Quiet,
)
from memprof.cli.views import print_summary

Out = Annotated[Path | None, typer.Option(help="Output folder. (default: reports/<backbone>-<timestamp>)")]
Resume = Annotated[
    Path | None, typer.Option(help="Continue the interrupted sweep in this folder, skipping what is done.")
]
Jobs = Annotated[
    int | None,
    typer.Option(
        help="Worker processes, each profiling whole methods. (default: one per "
        "method up to the CPUs for the fake engine, 1 otherwise)"
    ),
]
Fast = Annotated[
    bool,
    typer.Option(
        "--fast",
        help="Evaluate each method's closed form (memprof formula) over the "
        "grid, checked against one real profile per method, instead of profiling each "
        "configuration (fake engine).",
    ),
]


class _Bar:
    """The sweep's Progress protocol drawn as a rich progress bar with the current configuration."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.task = progress, None

    def start(self, total: int, done: int) -> None:
        self.task = self.progress.add_task("starting", total=total, completed=done)

    def begin(self, config) -> None:
        self.progress.update(self.task, description=f"{config.method}  seq {config.seq_len}  batch {config.batch_size}")

    def end(self, config, result) -> None:
        if result.status != "ok":  # printed above the bar (same console), as literal text
            say(
                f"{config.method} seq {config.seq_len} batch {config.batch_size}: {result.status}: {result.message}",
                style="yellow",
                err=True,
            )
        self.progress.advance(self.task)


def _sweep(grid, out_dir: Path, resume: bool, jobs: int, quiet: bool, fast: bool = False):
    """Run the sweep under a progress bar; Ctrl-C or SIGTERM says where the results are and how to resume."""
    from memprof.reporters import RESULTS_FILE
    from memprof.sweep.closed_form import ClosedFormRunner
    from memprof.sweep.run import SweepInterrupted, run_sweep

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    progress = Progress(*columns, console=err_console, disable=quiet, transient=False)
    try:
        with progress:
            run = ClosedFormRunner(grid.configs(), out_dir) if fast else None
            return run_sweep(grid, out_dir, resume=resume, progress=_Bar(progress), jobs=jobs, run=run)
    except SweepInterrupted as stop:
        raise interrupted(
            f"interrupted after {stop.done} of {stop.total} configurations; the results so far are in "
            f"{stop.out_dir / RESULTS_FILE}; resume with: memprof compare --resume {shlex.quote(str(stop.out_dir))}",
            stop.exit_code,
        ) from None


def _render(rs, out_dir: Path) -> Path:
    from memprof.errors import interrupt_exit_code
    from memprof.reporters import REPORT_FILE, RESULTS_FILE, render_all
    from memprof.sweep.closed_form import load_formulas

    try:
        render_all(rs, out_dir, formulas=load_formulas(out_dir))
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM as memprof.errors.Interrupted
        raise interrupted(
            f"interrupted while writing the report; the results are complete in {out_dir / RESULTS_FILE}; "
            f"render them with: memprof report {shlex.quote(str(out_dir / RESULTS_FILE))}",
            interrupt_exit_code(stop),
        ) from None
    return out_dir / REPORT_FILE


@app.command("compare")
def compare_cmd(
    backbone: GridBackbone = None,
    methods: GridMethods = None,
    seq_lens: GridSeqLens = None,
    batch_sizes: GridBatchSizes = None,
    engine: GridEngine = None,
    target: GridTarget = None,
    dtype: GridDtype = None,
    attn: GridAttn = None,
    task: GridTask = None,
    out: Out = None,
    resume: Resume = None,
    jobs: Jobs = None,
    quiet: Quiet = False,
    step: GridStep = None,
    fast: Fast = False,
    loss: GridLoss = None,
) -> None:
    """Profile every method x sequence length x batch size; write results.json, CSVs, plots, report.html, summary.md.

    An option left out takes the default its help names.
    A configuration that fails is recorded and the sweep goes on; exit 1 when none finished.
    """
    from memprof.engines.registry import traceable
    from memprof.errors import MemprofError
    from memprof.sweep import run as sweep
    from memprof.sweep.grid import parse_options

    options = parse_options(
        backbone=backbone,
        methods=methods,
        seq_lens=seq_lens,
        batch_sizes=batch_sizes,
        engine=engine,
        target=target,
        dtype=dtype,
        attn=attn,
        task=task,
        step=step,
        loss=loss,
    )
    if fast and not traceable(options.get("engine", "fake")):
        raise MemprofError(
            f"--fast evaluates the fake engine's closed form, not engine {options['engine']!r}; drop "
            "--fast or pass --engine fake"
        )
    if fast and options.get("loss", DEFAULT.loss) != "full":
        raise MemprofError(
            f"--fast evaluates closed forms and loss {options['loss']!r} has none (one chunk per "
            "so many tokens: no polynomial in b and s); drop --fast or pass --loss full"
        )
    grid, out_dir, jobs = sweep.plan(options, out=out, resume=resume, jobs=jobs)
    try:  # the folder stays locked until its report is written (NOTE [One writer per output folder])
        rs = _sweep(grid, out_dir, resume is not None, jobs, quiet, fast)
        print_summary(rs, _render(rs, out_dir), quiet=quiet)
    finally:
        sweep.release_out(out_dir)
    mismatch = next((r.message for r in rs.results if r.message.startswith("ClosedFormMismatch")), None)
    if mismatch is not None:
        say(("error:", "bold red"), " ", mismatch, err=True)
    if mismatch is not None or not any(r.status == "ok" for r in rs.results):
        raise typer.Exit(1)
