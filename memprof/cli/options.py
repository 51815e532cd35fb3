"""The option types of what is profiled, and of the options several commands share, declared once.

Each profiled field's option takes its name and help from ``memprof.results.configuration`` (NOTE
[ One declaration of what is profiled ]), and a command writes its default as ``DEFAULT.<field>``,
so ``--attn``'s help and default are written in one place for ``profile``, ``formula`` and ``fit``,
and ``compare``'s help names the grid's defaults from the same place.

typer takes an option's default from the signature, not from ``Annotated`` (it refuses one there):
hence ``DEFAULT`` rather than defaults inside these aliases.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated, Any

import typer

from memprof.results import configuration
from memprof.results.configuration import profiled

#: Each profiled field's default, by name: ``DEFAULT.attn``.
DEFAULT = SimpleNamespace(**{f.name: f.default for f in configuration.FIELDS})
#: ``fit``'s methods when none are given: the ones ``compare`` sweeps.
DEFAULT_METHODS = ",".join(profiled("method").sweep.default)


def _option(name: str, help: str | None = None) -> Any:
    """The option of the profiled field ``name``: its flag, and its help unless ``help`` says otherwise."""
    f = profiled(name)
    return typer.Option(f.option, help=f.help if help is None else help)


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _grid_option(name: str) -> Any:
    """``compare``'s option of the field ``name``: a comma-separated list where the grid sweeps it, and
    no default of its own (None is "not given": a resumed sweep keeps what it saved), so its help
    names the grid's default (a field resolved from the others already says how)."""
    f = profiled(name)
    default = f.compare_default
    flag, help = (f.sweep.option, f.sweep.help) if f.sweep is not None else (f.option, f.help)
    return typer.Option(flag, help=help if default is None else f"{help} (default: {_shown(default)})")


# One configuration (profile, formula, diagnose): the declaration's defaults.
Backbone = Annotated[str, _option("backbone")]
Method = Annotated[str, _option("method")]
SeqLen = Annotated[int, _option("seq_len")]
BatchSize = Annotated[int, _option("batch_size")]
Engine = Annotated[str, _option("engine")]
Target = Annotated[str | None, _option("target")]
Dtype = Annotated[str, _option("dtype")]
Attn = Annotated[str, _option("attn")]
Task = Annotated[str | None, _option("task")]
Seed = Annotated[int, _option("seed")]
Step = Annotated[str, _option("step")]
Loss = Annotated[str, _option("loss")]

# A grid (compare): every option defaults to None.
GridBackbone = Annotated[str | None, _grid_option("backbone")]
GridMethods = Annotated[str | None, _grid_option("method")]
GridSeqLens = Annotated[str | None, _grid_option("seq_len")]
GridBatchSizes = Annotated[str | None, _grid_option("batch_size")]
GridEngine = Annotated[str | None, _grid_option("engine")]
GridTarget = Annotated[str | None, _grid_option("target")]
GridDtype = Annotated[str | None, _grid_option("dtype")]
GridAttn = Annotated[str | None, _grid_option("attn")]
GridTask = Annotated[str | None, _grid_option("task")]
GridStep = Annotated[str | None, _grid_option("step")]
GridLoss = Annotated[str | None, _grid_option("loss")]

# A search (fit): the methods as compare takes them; one size fixed, the other searched.
Methods = Annotated[str, typer.Option(profiled("method").sweep.option, help=profiled("method").sweep.help)]
FitSeqLen = Annotated[
    int | None, _option("seq_len", f"Fix the sequence length and search the batch size (default {DEFAULT.seq_len}).")
]
FitBatchSize = Annotated[int | None, _option("batch_size", "Fix the global batch size and search the sequence length.")]

# Shared by commands that write a report.
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the report's path.")]
