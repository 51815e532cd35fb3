"""``memprof profile``: one configuration, its per-layer saved activations and its peak."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from rich.table import Table

from memprof.cli.app import app, console
from memprof.module_names import is_layer_number, layer_row
from memprof.result import CATEGORIES, Result


def group_path(module: str, depth: int | None = None) -> str:
    """The row a module path is shown in.

    ``depth=None``: its layer row (``memprof.module_names.layer_row``: ``bert.encoder.layer.3``, a
    reversible stack, or the first two components). ``depth=N``: the first N components, a layer
    number riding along with the name before it (``layer.3`` counts once).
    """
    if depth is None:
        return layer_row(module)
    if not module:
        return ""
    kept, named = [], 0
    for part in module.split("."):
        if is_layer_number(part):
            kept.append(part)
            continue
        if named == depth:
            break
        kept.append(part)
        named += 1
    return ".".join(kept)


def grouped_layers(layers: pd.DataFrame, depth: int | None = None) -> pd.DataFrame:
    """``Result.layers`` summed into ``group_path`` rows, in order of first appearance."""
    if layers.empty:
        return layers.copy()
    keyed = layers.assign(module=[group_path(m, depth) for m in layers["module"]])
    return keyed.groupby("module", sort=False, as_index=False).sum(numeric_only=True)


def _top_categories(row: pd.Series, n: int = 2) -> str:
    total = int(row["saved_bytes"]) or 1
    cats = sorted(((int(row[c]), c) for c in CATEGORIES if int(row[c])), reverse=True)[:n]
    return ", ".join(f"{c} {b / total:.0%}" for b, c in cats)


def layers_table(result: Result, depth: int | None) -> Table:
    from memprof.budget import format_bytes

    rows = grouped_layers(result.layers, depth)
    total = int(result.memory.saved_activations) or 1
    table = Table(title=f"saved activations by module ({'auto' if depth is None else f'depth {depth}'} grouping)")
    width = max([len("module"), *(len(m or "(model)") for m in rows["module"])]) if len(rows) else 6
    table.add_column("module", no_wrap=True, min_width=width)
    table.add_column("saved", justify="right", no_wrap=True, min_width=9)
    table.add_column("share", justify="right", no_wrap=True, min_width=6)
    table.add_column("top categories")
    for row in rows.to_dict("records"):
        table.add_row(row["module"] or "(model)", format_bytes(int(row["saved_bytes"])),
                      f"{int(row['saved_bytes']) / total:.1%}", _top_categories(pd.Series(row)))
    table.add_row("total", format_bytes(int(result.memory.saved_activations)), "100%", "", style="bold")
    return table


def peak_table(result: Result) -> Table:
    from memprof.budget import format_bytes

    m = result.memory
    table = Table(title="memory of the step")
    table.add_column("what")
    table.add_column("bytes", justify="right")
    table.add_column("", style="dim")
    rows = [
        ("parameters", m.parameters, "at peak"),
        ("gradients", m.gradients, "at peak"),
        ("optimizer state", m.optimizer_state, "at peak"),
        ("activations", m.activations_at_peak, "at peak"),
        ("temporaries", m.temporaries, "at peak"),
        ("peak", m.peak, "sum of the above"),
        ("saved activations", m.saved_activations, "saved for backward by the forward (hooks)"),
        ("peak activations", m.peak_activations, "most activation bytes live at once"),
        ("unattributed", m.unattributed, "live after the forward, not seen by the hooks"),
    ]
    if m.cuda_max_allocated is not None:
        rows += [("cuda max allocated", m.cuda_max_allocated, "torch.cuda.max_memory_allocated"),
                 ("cuda max reserved", m.cuda_max_reserved, "torch.cuda.max_memory_reserved")]
    if m.nvml_used is not None:
        rows.append(("nvml used", m.nvml_used, "device, CUDA context included"))
    for name, value, note in rows:
        table.add_row(name, format_bytes(value), note, style="bold" if name == "peak" else None)
    return table


@app.command("profile")
def profile_cmd(
    backbone: Annotated[str, typer.Option(help="Built-in backbone name, or a path to a config.json / model folder.")] = "bert-base",
    method: Annotated[str, typer.Option(help="Fine-tuning method (memprof methods: ft, lora, adapter, ...).")] = "ft",
    seq_len: Annotated[int, typer.Option(help="Sequence length of the synthetic batch.")] = 512,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 8,
    engine: Annotated[str, typer.Option(help="fake (no compute), cpu or cuda (real compute).")] = "fake",
    target: Annotated[Optional[str], typer.Option(help="Device whose kernels the fake engine models: cuda or cpu (default cuda; other engines: their own).")] = None,
    dtype: Annotated[str, typer.Option(help="fp32, bf16, fp16, mixed-bf16 or mixed-fp16 (autocast with fp32 weights).")] = "fp32",
    attn: Annotated[str, typer.Option(help="Attention implementation: sdpa or eager.")] = "sdpa",
    task: Annotated[Optional[str], typer.Option(help="classification, causal-lm or seq2seq (default: the family's).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the result as JSON to this file.")] = None,
    depth: Annotated[Optional[int], typer.Option(help="Group module paths to this many levels (a layer number rides along); default groups per transformer layer.")] = None,
) -> None:
    """Profile one training step: saved activations per module and category, and the peak."""
    from memprof import engines
    from memprof.budget import format_bytes
    from memprof.config import ProfileConfig
    from memprof.errors import MemprofError
    from memprof.result import write_json

    if depth is not None and depth < 1:
        raise MemprofError(f"depth {depth} must be at least 1; pass e.g. --depth 3, or leave it out for one row per layer")
    config = ProfileConfig(backbone=backbone, method=method, seq_len=seq_len, batch_size=batch_size, engine=engine,
                           target=target, dtype=dtype, attn=attn, task=task)
    result = engines.run(config)
    console.print(
        f"[bold]{result.backbone}[/] {result.method} | {result.task} | seq {result.seq_len} x batch {result.batch_size} | "
        f"{result.dtype} | engine {result.engine} (target {result.target}) | attention {result.attn_implementation} | "
        f"trainable {result.trainable_params:,} of {result.total_params:,} parameters",
        highlight=False,
    )
    if result.status != "ok":
        console.print(f"[bold red]{result.status}[/]: {result.message}", highlight=False)
    else:
        console.print(layers_table(result, depth))
        console.print(peak_table(result))
        if result.step_time_s is not None:
            console.print(f"step time {result.step_time_s:.3f} s (instrumented)", highlight=False)
    if json_out is not None:
        write_json(result, json_out)
        console.print(f"wrote {json_out} ({format_bytes(json_out.stat().st_size)})", highlight=False)
