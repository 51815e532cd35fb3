"""ProfileConfig: one configuration to profile, validated on construction."""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, field

import torch

from memprof import methods
from memprof.engines.registry import engine_named
from memprof.errors import MemprofError
from memprof.models import backbones
from memprof.models.tasks import ATTN_IMPLEMENTATIONS, check_task
from memprof.results.configuration import default, profiled
from memprof.results.result import LOSSES, STEPS
from memprof.units import short_repr

#: the engine table's names (``registry.ENGINE_MODULES``), for messages and help; validation asks the table
TARGETS = ("cuda", "cpu")
#: name -> (parameter dtype, autocast dtype or None)
DTYPES: dict[str, tuple[torch.dtype, torch.dtype | None]] = {
    "fp32": (torch.float32, None),
    "bf16": (torch.bfloat16, None),
    "fp16": (torch.float16, None),
    "mixed-bf16": (torch.float32, torch.bfloat16),
    "mixed-fp16": (torch.float32, torch.float16),
}


#: Largest seed ``torch.manual_seed`` takes.
MAX_SEED = 2**64 - 1
#: Fields that take a string, with an example (None too where the declaration makes the field
#: optional: resolved from the others).
_STR_FIELDS = {
    "method": ("a method name", "method='lora'"),
    "engine": ("an engine name", "engine='fake'"),
    "target": ("a target device name", "target='cuda'"),
    "dtype": ("a dtype name", "dtype='bf16'"),
    "attn": ("an attention implementation", "attn='sdpa'"),
    "task": ("a task name", "task='classification'"),
    "step": ("a step name", "step='steady'"),
    "loss": ("a loss name", "loss='chunked'"),
}
#: Fields that take a whole number: the CLI option that sets it, and an example.
_INT_FIELDS = {
    "seq_len": ("sequence length", "--seq-len", 512),
    "batch_size": ("batch size", "--batch-size", 8),
    "seed": ("seed", None, 0),
}


def _check_types(config: ProfileConfig) -> None:
    """NOTE [ Types before lookups ]: every field's type is checked before any of them is looked up,
    so a wrong type is named as such (``seq_len='8'``), never a TypeError from a comparison or an
    AttributeError from a registry lookup. bool is not a whole number here (``True`` is no batch
    size), nor is a float, even ``8.0``; integer types such as numpy's are taken as ints."""
    backbone = config.backbone
    if isinstance(backbone, os.PathLike):
        backbone = os.fspath(backbone)
    if not isinstance(backbone, str) or not backbone.strip():
        what = "is empty" if isinstance(backbone, str) else f"({type(backbone).__name__}) is not a str or path"
        raise MemprofError(
            f"backbone={short_repr(config.backbone)} {what}; pass a registry name such as backbone='bert-base' "
            "(`memprof backbones` lists them), or a path to a config.json or model folder"
        )
    config.backbone = backbone
    for name, (what, example) in _STR_FIELDS.items():
        value, optional = getattr(config, name), profiled(name).optional
        if not isinstance(value, str) and not (optional and value is None):
            either = "a str, or None for the default" if optional else "a str"
            raise MemprofError(
                f"{name}={short_repr(value)} ({type(value).__name__}) is not {what}: it must be "
                f"{either}; pass e.g. {example}"
            )
    for name, (what, _flag, example) in _INT_FIELDS.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise MemprofError(
                f"{name}={short_repr(value)} ({type(value).__name__}) is not a whole number ({what}); "
                f"pass an int, e.g. {name}={example}"
            )
        setattr(config, name, int(value))


def _positive(config: ProfileConfig, name: str) -> None:
    value = getattr(config, name)
    what, flag, example = _INT_FIELDS[name]
    if value < 1:
        raise MemprofError(
            f"{what} {value!r} must be a whole number of at least 1; "
            f"pass e.g. {name}={example} ({flag} {example} on the command line)"
        )


@dataclass
class ProfileConfig:
    """What to profile. ``target`` defaults to cuda for the fake engine and to the engine's own
    device otherwise; ``task`` defaults to the backbone family's task. ``loss="chunked"`` (causal-LM
    task only) computes the loss over chunks of tokens instead of the model's full logits
    (``memprof.models.losses``, NOTE [ Chunked causal-LM loss ]).

    Validated on construction, types first (NOTE [ Types before lookups ]): a bad value raises
    MemprofError naming the field, the value and the fix."""

    # The fields and their defaults are memprof.results.configuration's (NOTE [ One declaration of
    # what is profiled ]), in its order; the backbone is required (no model is picked for the API).
    backbone: str
    method: str = default("method")
    seq_len: int = default("seq_len")
    batch_size: int = default("batch_size")
    engine: str = default("engine")
    target: str | None = default("target")
    dtype: str = default("dtype")
    attn: str = default("attn")
    task: str | None = default("task")
    seed: int = default("seed")
    step: str = default("step")
    loss: str = default("loss")
    #: the backbone ``backbone`` names, looked up on construction. ``dataclasses.replace`` carries it
    #: over while ``backbone`` still names it: a config read from a path is not looked up again by
    #: its name, which names no built-in (or, for a folder called ``bert-base``, the wrong one)
    resolved: backbones.Backbone | None = field(default=None, repr=False, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        _check_types(self)
        _positive(self, "seq_len")
        _positive(self, "batch_size")
        if not 0 <= self.seed <= MAX_SEED:
            raise MemprofError(
                f"seed {self.seed} is outside 0 to 2**64 - 1 (what torch.manual_seed takes); pass e.g. seed=0"
            )
        if not isinstance(self.resolved, backbones.Backbone) or self.resolved.name != self.backbone:
            self.resolved = backbones.resolve(self.backbone)
        self.backbone = self.resolved.name
        methods.get(self.method)
        if self.seq_len > self.resolved.max_seq_len:
            limit = self.resolved.max_seq_len
            raise MemprofError(
                f"sequence length {self.seq_len} exceeds {self.backbone}'s maximum of {limit} positions; "
                f"pass seq_len={limit} or less (--seq-len {limit} on the command line)"
            )
        engine = engine_named(self.engine)  # MemprofError naming the engines if there is none
        if self.target is None:
            self.target = engine.targets[0]
        if self.target not in TARGETS:
            raise MemprofError(f"unknown target {self.target!r}; use one of {', '.join(TARGETS)}")
        if self.target not in engine.targets:
            raise MemprofError(
                f"target {self.target!r} differs from engine {self.engine!r}; target= / --target only applies to "
                "the fake engine: leave it out"
            )
        if self.dtype not in DTYPES:
            raise MemprofError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        if self.attn not in ATTN_IMPLEMENTATIONS:
            raise MemprofError(
                f"unknown attention implementation {self.attn!r}; use one of {', '.join(ATTN_IMPLEMENTATIONS)}"
            )
        self.task = check_task(self.resolved, self.task)
        if self.step not in STEPS:
            raise MemprofError(
                f"unknown step {self.step!r}; use one of {', '.join(STEPS)} (--step steady profiles a "
                "step with the optimizer state already resident)"
            )
        if self.loss not in LOSSES:
            raise MemprofError(
                f"unknown loss {self.loss!r}; use one of {', '.join(LOSSES)} (--loss chunked computes a "
                "causal-LM loss over chunks of tokens instead of the full logits)"
            )
        if self.loss == "chunked" and self.task != "causal-lm":
            raise MemprofError(
                f"loss 'chunked' is a causal-LM loss and the task is {self.task!r}; pass task='causal-lm' "
                "(--task causal-lm) on a decoder (opt, llama, qwen2, mistral, gpt2), or loss='full'"
            )
        unavailable = engine.unavailable()
        if unavailable is not None:
            raise MemprofError(unavailable)

    @property
    def param_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype][0]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return DTYPES[self.dtype][1]
