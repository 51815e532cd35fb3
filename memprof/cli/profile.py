"""``memprof profile``: one configuration, its per-layer saved activations and its peak."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from memprof.cli.app import app, cell, console, say
from memprof.cli.options import (
    DEFAULT,
    Attn,
    Backbone,
    BatchSize,
    Dtype,
    Engine,
    Loss,
    Method,
    SeqLen,
    Step,
    Target,
    Task,
)

JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON to this file.")]
Depth = Annotated[
    int | None,
    typer.Option(
        help="Group module paths to this many levels (a layer number rides along); "
        "default groups per transformer layer."
    ),
]


def _top_categories(row: dict, n: int = 2) -> str:
    from memprof.results.result import CATEGORIES

    total = int(row["saved_bytes"]) or 1
    cats = sorted(((int(row[c]), c) for c in CATEGORIES if int(row[c])), reverse=True)[:n]
    return ", ".join(f"{c} {b / total:.0%}" for b, c in cats)


def saved_by_module_table(result, depth: int | None) -> Table:
    """The rich table of saved activations per module group (``reporters.table.layers_by_group``)."""
    from memprof.reporters.table import layers_by_group
    from memprof.units import format_bytes

    rows = layers_by_group(result.layers, depth)
    total = int(result.memory.saved_activations) or 1
    table = Table(
        title=cell(
            f"saved activations by module ({'auto' if depth is None else f'depth {depth}'} grouping)", "table.title"
        )
    )
    width = max([len("module"), *(len(m) for m in rows["module"])]) if len(rows) else 6
    table.add_column("module", no_wrap=True, min_width=width)
    table.add_column("saved", justify="right", no_wrap=True, min_width=9)
    table.add_column("share", justify="right", no_wrap=True, min_width=6)
    table.add_column("top categories")
    for row in rows.to_dict("records"):
        table.add_row(
            cell(row["module"]),
            format_bytes(int(row["saved_bytes"])),
            f"{int(row['saved_bytes']) / total:.1%}",
            cell(_top_categories(row)),
        )
    table.add_row("total", format_bytes(int(result.memory.saved_activations)), "100%", "", style="bold")
    return table


#: (row, Memory field, note) of the step-memory table; the CUDA rows only where measured
_STEP_ROWS = (
    ("parameters", "parameters", "at peak"),
    ("gradients", "gradients", "at peak"),
    ("optimizer state", "optimizer_state", "at peak"),
    ("activations", "activations_at_peak", "at peak"),
    ("temporaries", "temporaries", "at peak"),
    ("peak", "peak", "sum of the above"),
    ("saved activations", "saved_activations", "saved for backward by the forward (hooks)"),
    ("peak activations", "peak_activations", "most activation bytes live at once"),
    ("unattributed", "unattributed", "live after the forward, not seen by the hooks"),
    ("cuda max allocated", "cuda_max_allocated", "torch.cuda.max_memory_allocated"),
    ("cuda max reserved", "cuda_max_reserved", "torch.cuda.max_memory_reserved"),
    ("nvml used", "nvml_used", "device, CUDA context included"),
)


def step_memory_table(result) -> Table:
    from memprof.units import format_bytes

    table = Table(title="memory of the step")
    table.add_column("what")
    table.add_column("bytes", justify="right")
    table.add_column("", style="dim")
    for name, metric, note in _STEP_ROWS:
        value = getattr(result.memory, metric)
        if value is not None or not metric.startswith(("cuda_", "nvml_")):
            table.add_row(name, format_bytes(value), note, style="bold" if name == "peak" else None)
    return table


def _print_result(result, depth: int | None) -> None:
    loss = " | chunked loss" if result.loss == "chunked" else ""
    say(
        (result.backbone, "bold"),
        f" {result.method} | {result.task} | seq {result.seq_len} x batch {result.batch_size} | "
        f"{result.dtype}{' | steady step' if result.step == 'steady' else ''}{loss} | "
        f"engine {result.engine} (target {result.target}) | "
        f"attention {result.attn_implementation} | "
        f"trainable {result.trainable_params:,} of {result.total_params:,} parameters",
    )
    if result.status != "ok":
        say((result.status, "bold red"), f": {result.message}")
        return
    console.print(saved_by_module_table(result, depth))
    console.print(step_memory_table(result))
    if result.step_time_s is not None:
        say(f"step time {result.step_time_s:.3f} s (instrumented)")


@app.command("profile")
def profile_cmd(
    backbone: Backbone = DEFAULT.backbone,
    method: Method = DEFAULT.method,
    seq_len: SeqLen = DEFAULT.seq_len,
    batch_size: BatchSize = DEFAULT.batch_size,
    engine: Engine = DEFAULT.engine,
    target: Target = DEFAULT.target,
    dtype: Dtype = DEFAULT.dtype,
    attn: Attn = DEFAULT.attn,
    task: Task = DEFAULT.task,
    json_out: JsonOut = None,
    depth: Depth = None,
    step: Step = DEFAULT.step,
    loss: Loss = DEFAULT.loss,
) -> None:
    """Profile one training step: saved activations per module and category, and the peak."""
    from memprof import engines
    from memprof.engines.config import ProfileConfig
    from memprof.errors import MemprofError
    from memprof.outputs import backbone_inputs, check_distinct, check_file, check_single_result
    from memprof.results.result import write_json
    from memprof.units import format_bytes

    if depth is not None and depth < 1:
        raise MemprofError(
            f"depth {depth} must be at least 1; pass e.g. --depth 3, or leave it out for one row per layer"
        )
    if json_out is not None:  # before the profile runs, not after (NOTE [Fail before the work])
        check_file(json_out, "the result", "--json")
        check_distinct({"--backbone": backbone_inputs(backbone)}, {"--json": json_out})
        check_single_result(json_out, "--json")
    config = ProfileConfig(
        backbone=backbone,
        method=method,
        seq_len=seq_len,
        batch_size=batch_size,
        engine=engine,
        target=target,
        dtype=dtype,
        attn=attn,
        task=task,
        step=step,
        loss=loss,
    )
    result = engines.run(config)
    _print_result(result, depth)
    if json_out is not None:
        write_json(result, json_out)
        say(f"wrote {json_out} ({format_bytes(json_out.stat().st_size)})")
