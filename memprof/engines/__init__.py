"""Engines: one instrumented training step of a ``ProfileConfig``, as a ``Result``.

* ``fake``: fake tensors (no weights, no arithmetic); models the target's kernels (``--target``).
* ``cpu``: real compute on the CPU; also times the step.
* ``cuda``: real compute on the GPU; adds the allocator's and NVML's figures.

All three measure with the same instruments (``memprof.instrument``): saved-tensor hooks per
module and category, and the live-storage timeline for the peak and its split. Each is one
``Engine`` (``base.py``: its properties and hooks; the shared step is ``Engine.run``), found by
name in ``ENGINE_MODULES`` (``registry.py``), its module imported when first asked for.
"""

from __future__ import annotations

from memprof.engines.common import Built, ModelCache, failed_result, is_oom
from memprof.engines.config import ProfileConfig
from memprof.engines.registry import ENGINE_MODULES, engine_named, engine_names, traceable
from memprof.instrument.session import refuse_nesting
from memprof.results.configuration import default
from memprof.results.result import Result

__all__ = ["Built", "ENGINE_MODULES", "ModelCache", "engine_named", "engine_names", "profile", "run", "traceable"]


def run(config: ProfileConfig, cache: ModelCache | None = None) -> Result:
    """Profile one training step of ``config`` with its engine.

    ``cache`` (a ``ModelCache``) reuses the model built for an earlier configuration that differs
    only in sequence length, batch size or seed. Running out of memory (building or stepping)
    gives a Result with status ``"oom"`` and the allocator's message; any other exception
    propagates. An engine that allocates nothing on the device it models (``Engine.allocates``
    False: the fake engine) meets this machine's limit there, not the device's: a MemprofError
    (``Engine.host_memory_error``; ``fake.py``, NOTE [ The batch is real ]), never status ``"oom"``.
    """
    refuse_nesting("memprof.profile")  # before building anything (NOTE [ One measurement at a time ])
    engine = engine_named(config.engine)
    try:
        built = cache.get(config, engine.build) if cache is not None else engine.build(config)
        return engine.run(built, config)
    except Exception as exc:
        if not is_oom(exc):
            raise
        if not engine.allocates:
            raise engine.host_memory_error(config, exc) from exc
        result = failed_result(config, exc, device_name=config.engine)
    # Outside the handler: the traceback, and the tensors its frames held, are gone now.
    engine.cleanup()
    return result


def profile(
    backbone: str,
    method: str = default("method"),
    seq_len: int = default("seq_len"),
    batch_size: int = default("batch_size"),
    engine: str = default("engine"),
    target: str | None = default("target"),
    dtype: str = default("dtype"),
    attn: str = default("attn"),
    task: str | None = default("task"),
    step: str = default("step"),
    loss: str = default("loss"),
) -> Result:
    """Profile one training step of ``backbone`` fine-tuned with ``method``.

    Validates the arguments (``ProfileConfig``; a ``MemprofError`` names the bad value) and runs
    the engine. ``target`` defaults to cuda for the fake engine and to the engine's own device
    otherwise; ``task`` to the backbone family's task. ``step="steady"`` profiles a step with AdamW's
    state already resident (every step after the first); ``"first"`` the first step, which creates it.
    ``loss="chunked"`` computes a causal LM's loss without its full logits (``memprof.chunked_causal_lm_loss``).

    Example::

        >>> r = memprof.profile("bert-base", "lora", seq_len=128, batch_size=8)
        >>> r.memory.saved_activations, r.layers.head()
    """
    config = ProfileConfig(
        backbone=backbone,
        method=method,
        seq_len=seq_len,
        batch_size=batch_size,
        engine=engine,
        target=target,
        dtype=dtype,
        attn=attn,
        task=task,
        step=step,
        loss=loss,
    )
    return run(config)
