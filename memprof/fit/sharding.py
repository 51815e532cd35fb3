"""What one rank holds when a training step is spread over ``world_size`` GPUs: data parallelism
without sharding (DDP) and the three stages of ZeRO (Rajbhandari et al., "ZeRO: Memory
Optimizations Toward Training Trillion Parameter Models", SC 2020, section 5 and figure 1).

With N ranks, P parameter bytes, G gradient bytes and O optimizer-state bytes of the whole model:

    shard   parameters  gradients  optimizer state   what runs it
    none    P           G          O                 DDP (every rank a full replica)
    zero1   P           G          O / N             ZeRO-1 (P_os)
    zero2   P           G / N      O / N             ZeRO-2 (P_os+g)
    zero3   P / N       G / N      O / N             ZeRO-3 (P_os+g+p); FSDP's FULL_SHARD, FSDP2's fully_shard

(a share is rounded up to a whole byte). Activations and temporaries are not divided: each rank
runs the forward and backward of its own micro-batch (global batch / N), so they are what one
process measures at that micro-batch. Not counted: the one unit (a layer) ZeRO-3 / FSDP gathers
in full for its forward or backward, and the communication buffers of the reduce-scatter /
all-reduce; DDP's gradient buckets are counted with ``ddp_buckets`` (its default keeps a bucket
copy of every gradient; ``gradient_as_bucket_view=True`` does not).
"""

from __future__ import annotations

from dataclasses import dataclass

from memprof.errors import MemprofError

SHARDS = ("none", "zero1", "zero2", "zero3")
#: which of (parameters, gradients, optimizer state) each scheme divides by the world size
_DIVIDES = {
    "none": (False, False, False),
    "zero1": (False, False, True),
    "zero2": (False, True, True),
    "zero3": (True, True, True),
}


@dataclass(frozen=True)
class PerRank:
    """Bytes one rank holds of the model state."""

    parameters: int
    gradients: int
    optimizer_state: int
    #: DDP's gradient buckets (``shard="none"`` with more than one rank and ``ddp_buckets``)
    buckets: int = 0

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer_state + self.buckets


def check(world_size: int, shard: str) -> None:
    """MemprofError unless ``world_size`` is a whole number >= 1 and ``shard`` one of ``SHARDS``."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise MemprofError(
            f"world size {world_size!r} must be a whole number of at least 1 (the number of GPUs); "
            "pass e.g. --world-size 8, or leave it out for one GPU"
        )
    if shard not in SHARDS:
        raise MemprofError(f"unknown shard scheme {shard!r}; use one of {', '.join(SHARDS)} (zero3 is what FSDP does)")


def _share(nbytes: int, world_size: int) -> int:
    return -(-nbytes // world_size)  # ceil: a rank holding any part of a byte holds the byte


def per_rank(
    parameters: int,
    gradients: int,
    optimizer_state: int,
    world_size: int = 1,
    shard: str = "none",
    *,
    ddp_buckets: int = 0,
) -> PerRank:
    """What one of ``world_size`` ranks holds of ``parameters``, ``gradients`` and
    ``optimizer_state`` (bytes of the whole model) under ``shard`` (see the module docstring).
    ``ddp_buckets``: bytes of DDP's gradient buckets, counted only for ``shard="none"`` with more
    than one rank (one process runs no DDP)."""
    check(world_size, shard)
    p, g, o = _DIVIDES[shard]
    n = world_size
    return PerRank(
        parameters=_share(parameters, n) if p else parameters,
        gradients=_share(gradients, n) if g else gradients,
        optimizer_state=_share(optimizer_state, n) if o else optimizer_state,
        buckets=ddp_buckets if shard == "none" and n > 1 else 0,
    )
