"""``memprof diagnose``: gradient fidelity of MEFT's reversible backprop for a backbone, variant,
arithmetic and dtype.

The measurement is ``memprof.engines.fidelity.diagnose`` (``meft.gradient_fidelity`` on the
configuration's model and batch); this module prints it.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from memprof.cli.app import app, cell, console, say
from memprof.cli.options import DEFAULT, Backbone, BatchSize, Seed, SeqLen, Task
from memprof.cli.views import print_json

#: diagnose's own sizes, ``memprof.engines.fidelity``'s (written again here because that module
#: imports torch and the CLI imports it only when the command runs; a test holds them equal)
SEQ_LEN, BATCH_SIZE = 128, 2
#: relative error thresholds of the verdict column
OK, FAIR = 1e-3, 1e-2


def _verdict(error: float) -> Text:
    if error < OK:
        return cell("ok", "green")
    return cell("fair", "yellow") if error < FAIR else cell("bad", "bold red")


@app.command("diagnose")
def diagnose_cmd(
    backbone: Backbone = DEFAULT.backbone,
    variant: Annotated[str, typer.Option(help="MEFT variant: meft1, meft2 or meft3.")] = "meft1",
    arithmetic: Annotated[str, typer.Option(help="exact (fixed point, the default) or float (the paper's).")] = "exact",
    dtype: Annotated[str, typer.Option(help="A dtype of `memprof profile`, or fp64.")] = DEFAULT.dtype,
    seq_len: SeqLen = SEQ_LEN,
    batch_size: BatchSize = BATCH_SIZE,
    task: Task = DEFAULT.task,
    seed: Seed = DEFAULT.seed,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON instead of tables.")] = False,
) -> None:
    """One training step (dropout on) with every layer reversible, against ordinary backprop through
    the same model: how exactly each layer's input was reconstructed, and how close each trainable
    parameter's gradient is (relative error, cosine), per layer. On CPU.
    """
    from memprof.engines.fidelity import diagnose

    config, report = diagnose(backbone, variant, arithmetic, dtype, seq_len, batch_size, task, seed)
    if as_json:
        print_json(
            {
                "backbone": config.backbone,
                "variant": variant,
                "seq_len": seq_len,
                "batch_size": batch_size,
                **report.to_dict(),
                "dtype": dtype,
            }
        )
        return
    _print(report, f"{config.backbone} {variant} {arithmetic} {dtype} seq {seq_len} batch {batch_size}")


COLUMNS = (
    "stack",
    "layer",
    "input max abs error",
    "input rel. error",
    "worst grad rel. error",
    "lowest grad cosine",
    "",
)


def _print(report, title: str) -> None:
    _print_table(report, title)
    _print_summary(report)


def _print_table(report, title: str) -> None:
    table = Table(title=cell(f"MEFT gradient fidelity: {title}", "table.title"))
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("stack", "") else "right")
    by_layer: dict[tuple, list] = {}
    for p in report.parameters:
        by_layer.setdefault((p.stack, p.layer), []).append(p)
    rebuilt = {(r.stack, r.layer): r for r in report.layers}
    for key, params in by_layer.items():
        rec = rebuilt.get(key)
        worst = max(p.relative_error for p in params)
        table.add_row(
            cell(key[0]),
            "" if key[1] is None else str(key[1]),
            "-" if rec is None else f"{rec.max_abs:.2e}",
            "-" if rec is None else f"{rec.relative:.2e}",
            f"{worst:.2e}",
            f"{min(p.cosine for p in params):.6f}",
            _verdict(worst),
        )
    console.print(table)


def _print_summary(report) -> None:
    for stack in dict.fromkeys(r.stack for r in report.layers):
        rows = [r for r in report.layers if r.stack == stack]
        exact = sum(r.max_abs == 0 for r in rows)
        safe = sum(1 for _ in _under(sorted(rows, key=lambda r: -r.layer), FAIR))
        say(
            f"{stack}: {exact} of {len(rows)} layers reconstructed bit for bit, {safe} under 1% error "
            f"({report.arithmetic} arithmetic, {report.dtype})"
        )
    say(
        f"worst gradient relative error {report.worst_relative_error:.2e}, lowest cosine "
        f"{report.lowest_cosine:.6f}; trainable parameters without a gradient: {', '.join(report.missing) or 'none'}"
    )


def _under(rows_top_down, limit: float):
    """The layers, from the top of the stack down, until the first whose reconstruction is off by ``limit``."""
    for r in rows_top_down:
        if not r.relative < limit:
            return
        yield r
