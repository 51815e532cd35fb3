"""What a profile is of: every field that names a profiled configuration, declared once.

NOTE [ One declaration of what is profiled ]
``FIELDS`` lists each thing a profiled configuration names (backbone, method, sizes, engine, dtype,
attention, ...) once, with its type, its default, its one line of help and the parts it plays.
Everything that restated the list derives from it instead: ``ProfileConfig``'s and
``memprof.profile``'s defaults (``memprof.engines``), the result key (``KEY_FIELDS``), what a
Result records of its configuration (``RECORDED_FIELDS``) and what a built model depends on
(``MODEL_FIELDS``), the ``compare`` grid and its defaults (``grid_defaults``, ``memprof.sweep.grid``),
``fit``'s shared defaults, and every CLI option type (``memprof.cli.options``). A default changed
here changes everywhere; tests/memprof/test_configuration.py fails where one is written again.

It lives in ``results`` (layer 2) because the result key does, and so holds names, plain values and
text only: the checks that need the registries (backbones, methods, dtypes) stay in
``memprof.engines.config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: ``Profiled.grid_default`` of a field whose grid default is its ``default``
SAME: Any = object()


@dataclass(frozen=True)
class Sweep:
    """A field ``memprof compare`` takes a list of: the grid's field, what it sweeps by default, its help."""

    name: str
    default: tuple
    help: str

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Profiled:
    """One field of a profiled configuration.

    ``default`` is what a command takes when the option is left out, and ProfileConfig's default
    unless ``required`` (the Python API names its backbone: no model is picked for it). None means
    resolved from the other fields (``target``: the engine's; ``task``: the family's).
    ``key``: its place in the result key (None: not in it), in the order key tuples, gate tables
    and ``key_label`` have always used. ``model``: a model built for one value cannot serve another
    (``ModelCache.key``). ``recorded``: a Result records it under the same name (``attn`` is
    recorded as the implementation that ran, ``attn_implementation``; ``seed`` is not recorded).
    ``grid``: ``memprof compare`` takes it; ``sweep``: as a list; ``grid_default``: compare's own
    default where it differs from ``default``.
    """

    name: str
    type: type
    default: Any
    help: str
    key: int | None = None
    model: bool = True
    recorded: bool = True
    grid: bool = True
    sweep: Sweep | None = None
    grid_default: Any = SAME
    required: bool = False

    @property
    def option(self) -> str:
        """The CLI option that sets it."""
        return "--" + self.name.replace("_", "-")

    @property
    def optional(self) -> bool:
        """None is a value (resolved from the other fields)."""
        return self.default is None

    @property
    def annotation(self) -> str:
        """Its type as ProfileConfig's annotation reads."""
        return f"{self.type.__name__} | None" if self.optional else self.type.__name__

    @property
    def compare_default(self) -> Any:
        """What ``memprof compare`` takes when the option is left out (a list for a swept field)."""
        if self.sweep is not None:
            return list(self.sweep.default)
        return self.default if self.grid_default is SAME else self.grid_default


#: In ProfileConfig's order, which is also ``memprof.profile``'s, the grid's and results.json's "options".
FIELDS: tuple[Profiled, ...] = (
    Profiled(
        "backbone",
        str,
        "bert-base",
        "Built-in backbone name, or a path to a config.json / model folder.",
        key=0,
        grid_default="bart-large",
        required=True,
    ),
    Profiled(
        "method",
        str,
        "ft",
        "Fine-tuning method (memprof methods: ft, lora, adapter, ...).",
        key=1,
        sweep=Sweep("methods", ("ft", "lora", "meft"), "Comma-separated methods, or 'all' (aliases left out)."),
    ),
    Profiled(
        "seq_len",
        int,
        512,
        "Sequence length of the synthetic batch.",
        key=2,
        model=False,
        sweep=Sweep("seq_lens", (128, 256, 512), "Comma-separated sequence lengths."),
    ),
    Profiled(
        "batch_size",
        int,
        8,
        "Batch size.",
        key=3,
        model=False,
        sweep=Sweep("batch_sizes", (8, 16, 32), "Comma-separated batch sizes."),
    ),
    Profiled("engine", str, "fake", "fake (no compute), cpu or cuda (real compute).", key=5),
    Profiled(
        "target",
        str,
        None,
        "Device whose kernels the fake engine models: cuda or cpu (default cuda; other engines: their own).",
        key=6,
    ),
    Profiled("dtype", str, "fp32", "fp32, bf16, fp16, mixed-bf16 or mixed-fp16 (autocast with fp32 weights).", key=4),
    Profiled("attn", str, "sdpa", "Attention implementation: sdpa or eager.", recorded=False),
    Profiled("task", str, None, "classification, causal-lm or seq2seq (default: the family's)."),
    # A model built with one seed serves every other: its memory does not depend on the weights' values.
    Profiled(
        "seed",
        int,
        0,
        "Seed of the random weights, adapters, dropout and batch.",
        model=False,
        recorded=False,
        grid=False,
    ),
    Profiled(
        "step",
        str,
        "first",
        "first (AdamW creates its state inside the step) or steady (the state resident "
        "throughout, as in every later step).",
        key=7,
        model=False,
    ),
    Profiled(
        "loss",
        str,
        "full",
        "full (the model's own loss) or chunked (causal LM: the loss over chunks of tokens, "
        "never the whole logits; memprof.chunked_causal_lm_loss).",
        key=8,
        model=False,
    ),
)

_BY_NAME = {f.name: f for f in FIELDS}


def profiled(name: str) -> Profiled:
    """The declaration of the field ``name`` (KeyError for a name that is not profiled)."""
    return _BY_NAME[name]


def default(name: str) -> Any:
    """The default of the field ``name``."""
    return _BY_NAME[name].default


#: What identifies a configuration across runs: a sweep resumes, and the gate matches, on these.
KEY_FIELDS: tuple[str, ...] = tuple(
    f.name for f in sorted((f for f in FIELDS if f.key is not None), key=lambda f: f.key)
)
#: What a built model depends on: configurations that differ only elsewhere share one.
MODEL_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.model)
#: What a Result records of its configuration, under the same names.
RECORDED_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.recorded)
#: The fields ``memprof compare`` takes.
GRID_FIELDS: tuple[Profiled, ...] = tuple(f for f in FIELDS if f.grid)


def grid_defaults() -> dict[str, Any]:
    """``memprof compare``'s options when none is given, by the grid's names (``seq_lens`` for a swept
    ``seq_len``), in the order results.json's "options" holds them; fresh lists on every call."""
    return {(f.sweep.name if f.sweep else f.name): f.compare_default for f in GRID_FIELDS}
