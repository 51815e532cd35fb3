"""``memprof backbones``: the registry with parameter counts."""

from __future__ import annotations

from rich.table import Table

from memprof.cli.app import app, cell, console


@app.command("backbones")
def backbones_cmd() -> None:
    """List the built-in backbones with family, default task, depth and parameter count."""
    from memprof import backbones
    from memprof.errors import MemprofError
    from memprof.params import count_params
    from memprof.tasks import build_model

    table = Table(title="backbones")
    for col in ("name", "family", "default task", "layers", "max seq", "parameters", "weights"):
        table.add_column(col, justify="right" if col in ("layers", "max seq", "parameters") else "left")
    for name in backbones.known_names():
        try:
            bb = backbones.resolve(name)
        except MemprofError:
            table.add_row(cell(name), "", "", "", "", "", "package not installed")
            continue
        _, total = count_params(build_model(bb, device="meta"))
        table.add_row(
            cell(name), cell(bb.family), bb.default_task, str(bb.num_layers), str(bb.max_seq_len), f"{total / 1e6:,.1f} M",
            "pretrained" if bb.weights else "random",
        )
    console.print(table)
