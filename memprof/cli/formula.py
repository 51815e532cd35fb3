"""``memprof formula``: a configuration's memory as exact polynomials in batch size and sequence length."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from memprof.cli.app import app, cell, console, say
from memprof.cli.options import DEFAULT, Attn, Backbone, Dtype, Loss, Method, Target, Task

JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the formula as JSON to this file.")]
At = Annotated[str | None, typer.Option(help="Evaluate at these batch size,sequence length pairs, e.g. 8,512;32,128.")]

#: where the peak's regimes are looked for: powers of two
REGIME_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
REGIME_SEQS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


@app.command("formula")
def formula_cmd(
    backbone: Backbone = DEFAULT.backbone,
    method: Method = DEFAULT.method,
    target: Target = DEFAULT.target,
    dtype: Dtype = DEFAULT.dtype,
    attn: Attn = DEFAULT.attn,
    task: Task = DEFAULT.task,
    json_out: JsonOut = None,
    at: At = None,
    loss: Loss = DEFAULT.loss,
) -> None:
    """Saved activations per layer and in total, peak activations and the peak, as exact polynomials
    in batch size b and sequence length s, from one symbolic trace of the fake engine's step (of
    shallow copies of a deep model, composed)."""
    from memprof.engines.config import ProfileConfig
    from memprof.engines.symbolic import derive
    from memprof.outputs import backbone_inputs, check_distinct, check_file

    if json_out is not None:  # before the backbone is read (NOTE [Fail before the work])
        check_file(json_out, "the formula", "--json")
        check_distinct({"--backbone": backbone_inputs(backbone)}, {"--json": json_out})
    # The sizes are the formula's variables, not a configuration: any that every backbone allows
    # (a backbone with fewer positions than profile's default length has a formula too).
    config = ProfileConfig(
        backbone=backbone,
        method=method,
        seq_len=1,
        batch_size=2,
        engine="fake",
        target=target,
        dtype=dtype,
        attn=attn,
        task=task,
        loss=loss,
    )
    points = _parse_at(at, config.backbone, config.resolved.max_seq_len)
    with console.status("tracing one step with symbolic batch size and sequence length"):
        formula = derive(config)
    _print_formula(formula, config.resolved.max_seq_len, points)
    if json_out is not None:
        _write(formula, json_out)
        say(f"wrote {json_out}")


def _write(formula, path: Path) -> None:
    import json

    from memprof.results.files import write_atomically

    write_atomically(path, json.dumps(formula.to_dict(), indent=1, ensure_ascii=False) + "\n")


def _parse_at(text: str | None, backbone: str, max_seq: int) -> list[tuple[int, int]]:
    from memprof.errors import MemprofError

    if not text:
        return []
    points = []
    for part in text.split(";"):
        try:
            b, s = (int(x) for x in part.split(","))
        except ValueError:
            raise MemprofError(
                f"--at {text!r}: {part!r} is not batch size,sequence length; pass e.g. --at 8,512;32,128"
            ) from None
        if b < 1 or s < 1:
            raise MemprofError(f"--at {text!r}: sizes must be at least 1; pass e.g. --at 8,512")
        if s > max_seq:  # no step of that length runs: neither a formula nor a profile answers it
            raise MemprofError(
                f"--at {text!r}: sequence length {s} is beyond {backbone}'s {max_seq} positions; pass a sequence "
                f"length of at most {max_seq}, e.g. --at {b},{max_seq}"
            )
        points.append((b, s))
    return points


def _print_formula(formula, max_seq: int, points: list[tuple[int, int]]) -> None:
    how = formula.note or "one symbolic trace"  # a fit, or a composition from shallow copies, says so
    say(
        (f"{formula.backbone} {formula.method}", "bold"),
        f"  {formula.dtype} on {formula.target}, {formula.attn_implementation}: {how}",
    )
    say("holds where: " + "; ".join([formula.bounds_text, *formula.valid]))
    say("b = batch size, s = sequence length; bytes")
    table = Table(title=cell("saved activations by layer", "table.title"))
    table.add_column("layer", no_wrap=True)
    table.add_column("saved bytes", overflow="fold")
    for name, poly in formula.saved_by_layer():
        table.add_row(cell(name), cell(poly))
    table.add_row("total", cell(formula.sums["saved_activations"]), style="bold")
    console.print(table)
    say(("peak activations: ", "bold"), formula.peak_activations_expression)
    _print_peak(formula, max_seq)
    for b, s in points:
        m = formula.memory_at(b, s)
        outside = ""
        if not formula.within_bounds(b, s):
            outside = f" (outside {formula.bounds_text}: profile it to be sure)"
        elif failing := formula.failing(b, s):
            outside = f" (where {'; '.join(failing)} is not true: profile it to be sure)"
        say(
            f"at b={b}, s={s}: saved {m.saved_activations:,}, peak activations {m.peak_activations:,}, "
            f"peak {m.peak:,} bytes{outside}"
        )


def _print_peak(formula, max_seq: int) -> None:
    grid = [(b, s) for b in REGIME_BATCHES for s in REGIME_SEQS if s <= max_seq and formula.covers(b, s)]
    regimes = formula.peak_regimes(grid)
    if len(formula.peaks) == 1:
        say(("peak: ", "bold"), str(formula.peaks[0]["peak"]))
        return
    say(
        ("peak: ", "bold"),
        f"the largest of {len(formula.peaks)} polynomials (events of the step); on powers of two "
        f"up to b = 128, s = {max_seq}, where the formula holds, the peak is:",
    )
    for i, (b, s) in regimes:
        say(f"  {formula.peaks[i]['peak']}   (from b={b}, s={s})")
