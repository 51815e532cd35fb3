"""``memprof compare``: profile a grid of methods x sequence lengths x batch sizes and report it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)

from memprof.cli.app import app, err_console, say
from memprof.cli.views import print_summary

Backbone = Annotated[Optional[str], typer.Option(help="Backbone name or config path. (default: bart-large)")]
Methods = Annotated[Optional[str], typer.Option(help="Comma-separated methods. (default: ft,lora,meft)")]
SeqLens = Annotated[Optional[str], typer.Option(help="Comma-separated sequence lengths. (default: 128,256,512)")]
BatchSizes = Annotated[Optional[str], typer.Option(help="Comma-separated batch sizes. (default: 8,16,32)")]
Engine = Annotated[Optional[str], typer.Option(help="fake, cpu or cuda. (default: fake)")]
Target = Annotated[Optional[str], typer.Option(help="Device the fake engine models: cuda or cpu. (default: the engine's)")]
Dtype = Annotated[Optional[str], typer.Option(help="fp32, bf16, fp16, mixed-bf16 or mixed-fp16. (default: fp32)")]
Attn = Annotated[Optional[str], typer.Option(help="Attention implementation: eager or sdpa. (default: sdpa)")]
Task = Annotated[Optional[str], typer.Option(help="Model head. (default: the backbone family's)")]
Step = Annotated[Optional[str], typer.Option(
    help="Step profiled: first, or steady (optimizer state resident throughout). (default: first)")]
Loss = Annotated[Optional[str], typer.Option(
    help="full (the model's own loss) or chunked (causal LM: the loss over chunks of tokens, never the whole "
         "logits; memprof.chunked_causal_lm_loss). (default: full)")]
Out = Annotated[Optional[Path], typer.Option(help="Output folder. (default: reports/<backbone>-<timestamp>)")]
Resume = Annotated[Optional[Path], typer.Option(help="Continue the interrupted sweep in this folder, skipping what is done.")]
Jobs = Annotated[Optional[int], typer.Option(help="Worker processes, each profiling whole methods. (default: one per "
                                             "method up to the CPUs for the fake engine, 1 otherwise)")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the report's path.")]
Fast = Annotated[bool, typer.Option("--fast", help="Evaluate each method's closed form (memprof formula) over the "
                                    "grid, checked against one real profile per method, instead of profiling each "
                                    "configuration (fake engine).")]


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
            say(f"{config.method} seq {config.seq_len} batch {config.batch_size}: {result.status}: {result.message}",
                style="yellow", err=True)
        self.progress.advance(self.task)


def _interrupted(message: str) -> typer.Exit:
    say(message, err=True)
    return typer.Exit(130)


def _sweep(grid, out_dir: Path, resume: bool, jobs: int, quiet: bool, fast: bool = False):
    """Run the sweep under a progress bar; Ctrl-C says where the results are and how to resume."""
    from memprof.reporters import RESULTS_FILE
    from memprof.sweep.run import SweepInterrupted, run_sweep
    from memprof.sweep.closed_form import ClosedFormRunner

    columns = (SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    progress = Progress(*columns, console=err_console, disable=quiet, transient=False)
    try:
        with progress:
            run = ClosedFormRunner(grid.configs(), out_dir) if fast else None
            return run_sweep(grid, out_dir, resume=resume, progress=_Bar(progress), jobs=jobs, run=run)
    except SweepInterrupted as stop:
        raise _interrupted(
            f"interrupted after {stop.done} of {stop.total} configurations; the results so far are in "
            f"{stop.out_dir / RESULTS_FILE}; resume with: memprof compare --resume {shlex.quote(str(stop.out_dir))}"
        ) from None


def _render(rs, out_dir: Path) -> Path:
    from memprof.reporters import REPORT_FILE, RESULTS_FILE, render_all
    from memprof.sweep.closed_form import load_formulas

    try:
        render_all(rs, out_dir, formulas=load_formulas(out_dir))
    except KeyboardInterrupt:
        raise _interrupted(
            f"interrupted while writing the report; the results are complete in {out_dir / RESULTS_FILE}; "
            f"render them with: memprof report {shlex.quote(str(out_dir / RESULTS_FILE))}"
        ) from None
    return out_dir / REPORT_FILE


@app.command("compare")
def compare_cmd(backbone: Backbone = None, methods: Methods = None, seq_lens: SeqLens = None,
                batch_sizes: BatchSizes = None, engine: Engine = None, target: Target = None, dtype: Dtype = None,
                attn: Attn = None, task: Task = None, out: Out = None, resume: Resume = None, jobs: Jobs = None,
                quiet: Quiet = False, step: Step = None, fast: Fast = False, loss: Loss = None) -> None:
    """Profile every method x sequence length x batch size; write results.json, CSVs, plots, report.html, summary.md.

    With no options: bart-large; ft, lora, meft; sequence lengths 128, 256, 512; batch sizes 8, 16, 32; fake engine.
    A configuration that fails is recorded and the sweep goes on; exit 1 when none finished.
    """
    from memprof.sweep import run as sweep
    from memprof.errors import MemprofError

    options = sweep.parse_options(backbone=backbone, methods=methods, seq_lens=seq_lens, batch_sizes=batch_sizes,
                                  engine=engine, target=target, dtype=dtype, attn=attn, task=task, step=step,
                                  loss=loss)
    if fast and options.get("engine", "fake") != "fake":
        raise MemprofError(f"--fast evaluates the fake engine's closed form, not engine {options['engine']!r}; drop "
                           "--fast or pass --engine fake")
    if fast and options.get("loss", "full") != "full":
        raise MemprofError(f"--fast evaluates closed forms and loss {options['loss']!r} has none (one chunk per "
                           "so many tokens: no polynomial in b and s); drop --fast or pass --loss full")
    grid, out_dir, jobs = sweep.plan(options, out=out, resume=resume, jobs=jobs)
    rs = _sweep(grid, out_dir, resume is not None, jobs, quiet, fast)
    print_summary(rs, _render(rs, out_dir), quiet=quiet)
    mismatch = next((r.message for r in rs.results if r.message.startswith("ClosedFormMismatch")), None)
    if mismatch is not None:
        say(("error:", "bold red"), " ", mismatch, err=True)
    if mismatch is not None or not any(r.status == "ok" for r in rs.results):
        raise typer.Exit(1)
