"""``memprof diagnose``: per-layer reconstruction error of MEFT's inverse for a backbone, variant and dtype.

The measurement is ``meft.reconstruction_error``; this module builds the model and batch and prints.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from memprof.cli.app import app, console

DTYPES = ("fp32", "bf16", "fp16", "fp64")
#: relative error thresholds of the verdict column
OK, FAIR = 1e-3, 1e-2


def _verdict(error: float) -> str:
    if error < OK:
        return "[green]ok[/]"
    return "[yellow]fair[/]" if error < FAIR else "[bold red]bad[/]"


@app.command("diagnose")
def diagnose_cmd(
    backbone: Annotated[str, typer.Option(help="Backbone name or config path.")] = "bert-base",
    variant: Annotated[str, typer.Option(help="MEFT variant: meft1, meft2 or meft3.")] = "meft1",
    dtype: Annotated[str, typer.Option(help="fp32, bf16, fp16 or fp64.")] = "fp32",
    seq_len: Annotated[int, typer.Option(help="Sequence length of the synthetic batch.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Batch size of the synthetic batch.")] = 2,
    task: Annotated[str | None, typer.Option(help="Model head.  [default: the backbone family's]")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random weights, adapters and batch.")] = 0,
) -> None:
    """Print the relative error ||x_rec - x|| / ||x|| of every layer's input, reconstructed from the top
    of its stack by MEFT's inverse (as if every layer were reversible), on CPU in eval mode.

    The error grows towards the bottom (each inverse divides by lam or beta); the last line says how
    many layers stay under 1%, a bound for MEFTConfig.num_rev_layers.
    """
    import torch

    import meft
    from memprof import backbones
    from memprof.errors import MemprofError
    from memprof.tasks import build_model, check_task, make_batch

    config = meft.MEFTConfig(variant=variant)
    if dtype not in DTYPES:
        raise MemprofError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}; pass e.g. --dtype bf16")
    for name, value, flag in (("sequence length", seq_len, "--seq-len"), ("batch size", batch_size, "--batch-size")):
        if value < 1:
            raise MemprofError(f"{name} {value} must be at least 1; pass e.g. {flag} 8")
    bb = backbones.resolve(backbone)
    task = check_task(bb, task)
    if seq_len > bb.max_seq_len:
        raise MemprofError(f"sequence length {seq_len} exceeds {bb.name}'s maximum of {bb.max_seq_len} positions; "
                           f"pass --seq-len {bb.max_seq_len} or less")

    torch.manual_seed(seed)
    model = meft.convert(build_model(bb, task, attn_implementation="eager"), config)
    batch = make_batch(bb, task, batch_size, seq_len, seed=seed)
    errors = meft.reconstruction_error(model, batch, {"fp32": torch.float32, "bf16": torch.bfloat16,
                                                      "fp16": torch.float16, "fp64": torch.float64}[dtype])

    table = Table(title=f"MEFT reconstruction error: {bb.name} {variant} {dtype} seq {seq_len} batch {batch_size}")
    for col in ("stack", "layer", "x1 error", "x2 error", ""):
        table.add_column(col, justify="right" if "error" in col or col == "layer" else "left")
    for r in errors:
        table.add_row(r.stack, str(r.layer), f"{r.error_x1:.2e}", f"{r.error_x2:.2e}", _verdict(r.error))
    console.print(table)
    for stack in dict.fromkeys(r.stack for r in errors):
        rows = [r for r in errors if r.stack == stack]
        safe = max((len(rows) - r.layer for r in rows if r.error < FAIR), default=0)
        console.print(f"{stack}: {safe} of {len(rows)} layers reconstruct under 1% error in {dtype}", highlight=False)
