"""Engines: one instrumented training step of a ``ProfileConfig``, as a ``Result``.

* ``fake``: fake tensors (no weights, no arithmetic); models the target's kernels (``--target``).
* ``cpu``: real compute on the CPU; also times the step.
* ``cuda``: real compute on the GPU; adds the allocator's and NVML's figures.

All three measure with the same instruments (``memprof.instrument``): saved-tensor hooks per
module and category, and the live-storage timeline for the peak and its split.
"""

from __future__ import annotations

from memprof.engines.config import ProfileConfig
from memprof.engines.common import Built, ModelCache, failed_result, is_oom
from memprof.instrument.session import refuse_nesting
from memprof.results.result import Result

__all__ = ["Built", "ModelCache", "run", "profile"]


def _engine(name: str):
    if name == "fake":
        from memprof.engines import fake as engine
    elif name == "cpu":
        from memprof.engines import cpu as engine
    else:
        from memprof.engines import cuda as engine
    return engine


def run(config: ProfileConfig, cache: ModelCache | None = None) -> Result:
    """Profile one training step of ``config`` with its engine.

    ``cache`` (a ``ModelCache``) reuses the model built for an earlier configuration that differs
    only in sequence length, batch size or seed. Running out of memory (building or stepping)
    gives a Result with status ``"oom"`` and the allocator's message; any other exception
    propagates. The fake engine allocates nothing on the device it models, so an allocation
    failure there is this machine's limit, not the device's: a MemprofError (``fake.py``, NOTE
    [ The batch is real ]), never status ``"oom"``.
    """
    refuse_nesting("memprof.profile")  # before building anything (NOTE [ One measurement at a time ])
    engine = _engine(config.engine)
    try:
        built = cache.get(config, engine.build) if cache is not None else engine.build(config)
        return engine.run(built, config)
    except Exception as exc:
        if not is_oom(exc):
            raise
        if config.engine == "fake":
            raise engine.host_memory_error(config, exc) from exc
        result = failed_result(config, exc, device_name=config.engine)
    # Outside the handler: the traceback, and the tensors its frames held, are gone now.
    if config.engine == "cuda":
        engine.cleanup()
    return result


def profile(
    backbone: str,
    method: str = "ft",
    seq_len: int = 512,
    batch_size: int = 8,
    engine: str = "fake",
    target: str | None = None,
    dtype: str = "fp32",
    attn: str = "sdpa",
    task: str | None = None,
    step: str = "first",
) -> Result:
    """Profile one training step of ``backbone`` fine-tuned with ``method``.

    Validates the arguments (``ProfileConfig``; a ``MemprofError`` names the bad value) and runs
    the engine. ``target`` defaults to cuda for the fake engine and to the engine's own device
    otherwise; ``task`` to the backbone family's task. ``step="steady"`` profiles a step with AdamW's
    state already resident (every step after the first); ``"first"`` the first step, which creates it.

    Example::

        >>> r = memprof.profile("bert-base", "lora", seq_len=128, batch_size=8)
        >>> r.memory.saved_activations, r.layers.head()
    """
    config = ProfileConfig(
        backbone=backbone, method=method, seq_len=seq_len, batch_size=batch_size, engine=engine, target=target,
        dtype=dtype, attn=attn, task=task, step=step,
    )
    return run(config)
