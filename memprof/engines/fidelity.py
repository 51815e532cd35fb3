"""MEFT's gradient fidelity for a backbone configuration (``memprof diagnose``): the model and batch
of a validated configuration, every layer reversible, and ``meft.gradient_fidelity`` run on them."""

from __future__ import annotations

import torch

from memprof.engines.config import DTYPES as PROFILE_DTYPES
from memprof.engines.config import ProfileConfig
from memprof.errors import MemprofError
from memprof.models import tasks
from memprof.results.configuration import default

#: diagnose's own sizes: two real steps on the CPU (reversible and ordinary backprop), so a short
#: sequence and a small batch (``memprof diagnose`` takes the same: tests/memprof/test_configuration.py)
SEQ_LEN, BATCH_SIZE = 128, 2
#: profile's dtypes, with float64 beside the single-dtype ones (an exact reference)
DTYPES = {
    **{k: v for k, v in PROFILE_DTYPES.items() if v[1] is None},
    "fp64": (torch.float64, None),
    **{k: v for k, v in PROFILE_DTYPES.items() if v[1] is not None},
}


def diagnose(
    backbone: str,
    variant: str = "meft1",
    arithmetic: str = "exact",
    dtype: str = default("dtype"),
    seq_len: int = SEQ_LEN,
    batch_size: int = BATCH_SIZE,
    task: str | None = default("task"),
    seed: int = default("seed"),
):
    """One training step (dropout on) of ``backbone`` with every layer reversible, against ordinary
    backprop through the same model, on the CPU: (the validated ProfileConfig, meft's GradientFidelity).

    Validation is ``MEFTConfig``'s (variant, arithmetic) and ``ProfileConfig``'s (backbone, task,
    sizes, the backbone's positions); ``dtype`` is one of ``DTYPES``.
    """
    import meft

    # every layer through the reversible Function, the top one included, so that each is measured
    meft_config = meft.MEFTConfig(variant=variant, arithmetic=arithmetic, cache_top_layer=False)
    if dtype not in DTYPES:
        raise MemprofError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}; pass e.g. --dtype bf16")
    config = ProfileConfig(
        backbone,
        method=variant,
        seq_len=seq_len,
        batch_size=batch_size,
        engine="cpu",
        dtype="fp32" if dtype == "fp64" else dtype,
        task=task,
        seed=seed,
    )
    weights, autocast = DTYPES[dtype]
    torch.manual_seed(seed)
    model = tasks.build_model(config.resolved, config.task, attn_implementation="eager").to(weights)
    model = meft.convert(model, meft_config)
    batch = tasks.make_batch(config.resolved, config.task, batch_size, seq_len, seed=seed)
    return config, meft.gradient_fidelity(model, batch, autocast=autocast, seed=seed)
