"""ProfileConfig: one configuration to profile, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from memprof import backbones, methods
from memprof.errors import MemprofError
from memprof.tasks import ATTN_IMPLEMENTATIONS, check_task

ENGINES = ("fake", "cpu", "cuda")
TARGETS = ("cuda", "cpu")
#: name -> (parameter dtype, autocast dtype or None)
DTYPES: dict[str, tuple[torch.dtype, torch.dtype | None]] = {
    "fp32": (torch.float32, None),
    "bf16": (torch.bfloat16, None),
    "fp16": (torch.float16, None),
    "mixed-bf16": (torch.float32, torch.bfloat16),
    "mixed-fp16": (torch.float32, torch.float16),
}


def _positive(name: str, value: int, flag: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise MemprofError(f"{name} {value!r} must be a whole number of at least 1; pass e.g. {flag} 8")


@dataclass
class ProfileConfig:
    """What to profile. ``target`` defaults to cuda for the fake engine and to the engine's own
    device otherwise; ``task`` defaults to the backbone family's task."""

    backbone: str
    method: str = "ft"
    seq_len: int = 512
    batch_size: int = 8
    engine: str = "fake"
    target: str | None = None
    dtype: str = "fp32"
    attn: str = "sdpa"
    task: str | None = None
    seed: int = 0
    resolved: backbones.Backbone = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.resolved = backbones.resolve(self.backbone)
        self.backbone = self.resolved.name
        methods.get(self.method)
        _positive("sequence length", self.seq_len, "--seq-len")
        _positive("batch size", self.batch_size, "--batch-size")
        if self.seq_len > self.resolved.max_seq_len:
            raise MemprofError(
                f"sequence length {self.seq_len} exceeds {self.backbone}'s maximum of {self.resolved.max_seq_len} "
                f"positions; pass --seq-len {self.resolved.max_seq_len} or less"
            )
        if self.engine not in ENGINES:
            raise MemprofError(f"unknown engine {self.engine!r}; use one of {', '.join(ENGINES)}")
        if self.target is None:
            self.target = "cuda" if self.engine == "fake" else self.engine
        if self.target not in TARGETS:
            raise MemprofError(f"unknown target {self.target!r}; use one of {', '.join(TARGETS)}")
        if self.engine != "fake" and self.target != self.engine:
            raise MemprofError(
                f"target {self.target!r} differs from engine {self.engine!r}; --target only applies to the fake engine"
            )
        if self.dtype not in DTYPES:
            raise MemprofError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")
        if self.attn not in ATTN_IMPLEMENTATIONS:
            raise MemprofError(f"unknown attention implementation {self.attn!r}; use one of {', '.join(ATTN_IMPLEMENTATIONS)}")
        self.task = check_task(self.resolved, self.task)
        if self.engine == "cuda" and not torch.cuda.is_available():
            raise MemprofError("engine 'cuda' needs a CUDA GPU and none is visible; use --engine fake --target cuda, or --engine cpu")

    @property
    def param_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype][0]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return DTYPES[self.dtype][1]
