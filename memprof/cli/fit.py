"""``memprof fit``: the largest batch size (or sequence length) per method that fits a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from memprof.cli.app import app, cell, console, say
from memprof.cli.options import (
    DEFAULT,
    DEFAULT_METHODS,
    Attn,
    Backbone,
    Dtype,
    FitBatchSize,
    FitSeqLen,
    Loss,
    Methods,
    Task,
)
from memprof.fit import CONTEXT_ALLOWANCE_TEXT, FRAGMENTATION

#: fit's own backbone: a decoder large enough for the question "what fits" to be worth asking
BACKBONE = "opt-1.3b"

Budget = Annotated[
    str | None,
    typer.Option(help="Memory of one GPU: a size (24GiB, 80GB) or auto (the local GPU's free memory, through NVML)."),
]
Gpu = Annotated[
    str | None,
    typer.Option(help="A card instead of --budget: a100-40gb, a100-80gb, h100-80gb, h200, a6000, rtx4090, l4, t4."),
]
WorldSize = Annotated[int, typer.Option(help="Number of GPUs the step is spread over (data parallel).")]
Shard = Annotated[str, typer.Option(help="none (DDP), zero1, zero2 or zero3 (FSDP): what each rank keeps a share of.")]
Context = Annotated[
    str,
    typer.Option(
        help="Allowance per GPU for the CUDA context, kernels and library workspaces "
        "(1 GiB: pytorch/pytorch#34323, #12873)."
    ),
]
Fragmentation = Annotated[
    float,
    typer.Option(
        help="Margin for the caching allocator's fragmentation, as a fraction of the step's bytes (0.1 = 10%)."
    ),
]
ProfileAll = Annotated[
    bool, typer.Option("--profile-all", help="Search with profiles only, not each method's closed form.")
]
NoCache = Annotated[
    bool, typer.Option("--no-cache", help="Neither read nor store the formula cache (as in memprof compare).")
]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Write, per method, the answer and its memory breakdown.")]
PngOut = Annotated[
    Path | None, typer.Option("--png", help="Plot memory against the searched size with the budget line.")
]


def _answers_table(config, answers, budget_source: str) -> Table:
    from memprof.units import format_bytes

    what = "batch size" if config.searched == "batch_size" else "sequence length"
    fixed = f"seq {config.seq_len}" if config.searched == "batch_size" else f"batch {config.batch_size}"
    ranks = f", {config.world_size} GPUs ({config.shard})" if config.world_size > 1 else ""
    loss = " | chunked loss" if config.loss == "chunked" else ""
    table = Table(
        title=cell(
            f"{config.backbone_name} | {fixed} | {config.dtype}{loss} | budget {budget_source}{ranks}", "table.title"
        )
    )
    for name in ("method", f"max {what}", "steady peak", "first-step peak", "needed", "limit", "profiles"):
        table.add_column(name, justify="left" if name in ("method", "limit") else "right")
    for a in answers:
        d = a.to_dict()
        value = d.get("max_batch_size", d.get("max_seq_len"))
        shown = (
            f"{value} ({a.value} per GPU)" if config.world_size > 1 and config.searched == "batch_size" else str(value)
        )
        table.add_row(
            cell(a.method),
            shown if value else "none fits",
            format_bytes(a.at.step) if a.at else "-",
            format_bytes(a.first_step.step) if a.first_step else "-",
            format_bytes(a.at.required) if a.at else "-",
            a.limit,
            str(a.profiles),
        )
    return table


def _write_outputs(config, answers, budget_source: str, json_out: Path | None, png_out: Path | None) -> None:
    import json

    from memprof.fit import search as fit
    from memprof.reporters.fit_plot import plot_fit
    from memprof.results.files import write_atomically

    if json_out is not None:
        write_atomically(json_out, json.dumps(fit.to_json(config, answers, budget_source), indent=1) + "\n")
        say(f"wrote {json_out}")
    if png_out is not None:
        label = "batch size per GPU" if config.searched == "batch_size" else "sequence length"
        plot_fit(
            fit.curve_data(answers),
            config.budget,
            png_out,
            xlabel=label,
            title=f"What fits: {config.backbone_name}, steady-state step",
        )
        say(f"wrote {png_out}")


@app.command("fit")
def fit_cmd(
    backbone: Backbone = BACKBONE,
    methods: Methods = DEFAULT_METHODS,
    budget: Budget = None,
    gpu: Gpu = None,
    seq_len: FitSeqLen = None,
    batch_size: FitBatchSize = None,
    dtype: Dtype = DEFAULT.dtype,
    attn: Attn = DEFAULT.attn,
    task: Task = DEFAULT.task,
    world_size: WorldSize = 1,
    shard: Shard = "none",
    context: Context = CONTEXT_ALLOWANCE_TEXT,
    fragmentation: Fragmentation = FRAGMENTATION,
    json_out: JsonOut = None,
    png_out: PngOut = None,
    loss: Loss = DEFAULT.loss,
    profile_all: ProfileAll = False,
    no_cache: NoCache = False,
) -> None:
    """The largest batch size (or sequence length) per method whose steady-state step fits the budget.

    Searches each method's closed form (cached) and confirms the answer with fake-engine profiles at it
    and one above; counts the whole step, the context and a fragmentation margin.
    """
    from memprof.fit import gpus
    from memprof.fit import search as fit
    from memprof.outputs import backbone_inputs, check_distinct, check_file
    from memprof.units import parse_bytes

    for path, flag in ((json_out, "--json"), (png_out, "--png")):
        if path is not None:  # before any profile (NOTE [Fail before the work])
            check_file(path, "the fit", flag)
    check_distinct({"--backbone": backbone_inputs(backbone)}, {"--json": json_out, "--png": png_out})
    size, source = gpus.resolve_budget(budget, gpu)
    config = fit.FitConfig(
        backbone=backbone,
        methods=methods,
        budget=size,
        seq_len=seq_len,
        batch_size=batch_size,
        dtype=dtype,
        attn=attn,
        task=task,
        loss=loss,
        world_size=world_size,
        shard=shard,
        context=parse_bytes(context, what="context allowance"),
        fragmentation=fragmentation,
    )
    from memprof.engines.formula_cache import user_cache

    formulas = None if profile_all or loss != "full" else user_cache(enabled=not no_cache)
    answers = fit.fit(
        config,
        lambda m, n, step: say(
            f"profiling {m} at {config.searched.replace('_', ' ')} {n}" + (" (first step)" if step == "first" else ""),
            style="dim",
            err=True,
        ),
        formulas,
    )
    console.print(_answers_table(config, answers, source))
    say(f"counted: {fit.COUNTS}", style="dim")
    _write_outputs(config, answers, source, json_out, png_out)
