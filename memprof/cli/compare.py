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
ProfileAll = Annotated[
    bool,
    typer.Option(
        "--profile-all",
        help="Profile every configuration. By default the fake engine evaluates each method's closed form "
        "(memprof formula), checked against one real profile per method and cached; the cpu and cuda "
        "engines always profile.",
    ),
]
NoCache = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Neither read nor store formulas in the formula cache ($MEMPROF_CACHE_DIR, else "
        "$XDG_CACHE_HOME/memprof/formulas, else ~/.cache/memprof/formulas).",
    ),
]
NoReport = Annotated[
    bool,
    typer.Option(
        "--no-report",
        help="Write results.json (and formulas/) only: no CSVs, plots or report (a CI gate reads results.json; "
        "memprof report renders it later).",
    ),
]
Fast = Annotated[bool, typer.Option("--fast", hidden=True, help="The default now; kept so old scripts run.")]


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


def _sweep(grid, out_dir: Path, resume: bool, jobs: int, quiet: bool, runner=None):
    """Run the sweep under a progress bar; Ctrl-C or SIGTERM says where the results are and how to resume."""
    from memprof.reporters import RESULTS_FILE
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
            return run_sweep(grid, out_dir, resume=resume, progress=_Bar(progress), jobs=jobs, run=runner)
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
    loss: GridLoss = None,
    profile_all: ProfileAll = False,
    no_cache: NoCache = False,
    no_report: NoReport = False,
    fast: Fast = False,
) -> None:
    """Every method x sequence length x batch size; write results.json, CSVs, plots, report.html, summary.md.

    An option left out takes the default its help names. With the fake engine each method's checked
    closed form answers (one real profile per method checks it; a method whose formula disagrees is
    profiled throughout, and said so); --profile-all profiles every configuration.
    A configuration that fails is recorded and the sweep goes on; exit 1 when none finished.
    """
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
    jobs_given = jobs
    grid, out_dir, jobs = sweep.plan(options, out=out, resume=resume, jobs=jobs)
    try:  # the folder stays locked until its report is written (NOTE [One writer per output folder])
        runner = _closed_form(grid, out_dir, profile_all, no_cache)
        if runner is not None and runner.prefetch() and jobs_given is None:
            jobs = 1  # every answer is an evaluation: a worker would only pay for its imports
        rs = _sweep(grid, out_dir, resume is not None, jobs, quiet, runner)
        _say_how(rs, runner, quiet)
        if no_report:
            from memprof.reporters import RESULTS_FILE

            print_summary(rs, out_dir / RESULTS_FILE, quiet=quiet, what="results")
        else:
            print_summary(rs, _render(rs, out_dir), quiet=quiet)
    finally:
        sweep.release_out(out_dir)
    if not any(r.status == "ok" for r in rs.results):
        raise typer.Exit(1)


def _closed_form(grid, out_dir: Path, profile_all: bool, no_cache: bool):
    """The closed-form runner, or None where every configuration is profiled: --profile-all, an
    engine that runs real steps, or the chunked loss (one chunk per so many tokens: no polynomial)."""
    from memprof.engines.formula_cache import user_cache
    from memprof.engines.registry import traceable
    from memprof.sweep.closed_form import ClosedFormRunner

    configs = grid.configs()
    if profile_all or not all(traceable(c.engine) and c.loss == "full" for c in configs):
        return None
    formulas = user_cache(enabled=not no_cache)
    formulas.probe()  # here, once, not in each worker
    return ClosedFormRunner(configs, out_dir, formulas)


def _say_how(rs, runner, quiet: bool) -> None:
    """Which results came from closed forms, and each method that had to be profiled instead, and why."""
    from memprof.reporters.closed_form import provenance

    if runner is None:
        return
    how = provenance(rs)  # what the report's closed-form section says too
    for method, why in how["fallbacks"].items():
        say(("warning:", "bold yellow"), f" {method}: {why}; its results are exact all the same", err=True)
    if not quiet:
        n, profiled = how["evaluated"], how["profiled"]
        say(f"{n} of {len(rs.results)} results evaluated from checked closed forms, {profiled} profiled")
