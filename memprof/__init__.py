"""memprof: per-layer activation-memory profiling of transformer fine-tuning.

``profile`` runs one configuration through an engine (``memprof.engines.profile``); ``track``
measures your own training step (``memprof.instrument.session.track``); ``assert_memory`` fails
when one step of your model exceeds a budget (``memprof.checks.budget.assert_memory``);
``chunked_causal_lm_loss`` is a causal LM's loss without its full logits, for your own training loop
(``memprof.models.losses``). They are loaded on first use, so ``import memprof`` (and the pytest
plugin) does not import torch.
"""

from __future__ import annotations

import importlib

from memprof.errors import MemprofError  # noqa: E402
from memprof.results.result import Memory, Result, ResultSet, load_results  # noqa: E402
from memprof.version import __version__  # noqa: E402

_LAZY = {
    "profile": "memprof.engines",
    "track": "memprof.instrument.session",
    "assert_memory": "memprof.checks.budget",
    "chunked_causal_lm_loss": "memprof.models.losses",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memprof' has no attribute {name!r}")


__all__ = [
    "MemprofError",
    "Memory",
    "Result",
    "ResultSet",
    "load_results",
    "profile",
    "track",
    "assert_memory",
    "chunked_causal_lm_loss",
    "__version__",
]
