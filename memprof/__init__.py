"""memprof: per-layer activation-memory profiling of transformer fine-tuning.

``profile`` runs one configuration through an engine; ``track`` measures your own training step.
Both import torch only when called, so ``import memprof`` stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

from memprof.errors import MemprofError  # noqa: E402
from memprof.result import Memory, Result, ResultSet, load_results  # noqa: E402


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
) -> Result:
    """Profile one training step of ``backbone`` fine-tuned with ``method``; see ``memprof.engines.profile``."""
    from memprof.engines import profile as _profile

    return _profile(backbone, method, seq_len, batch_size, engine, target, dtype, attn, task)


def track(model, optimizer=None, *, name: str = "custom"):
    """Profile one training step of your own model and loop; see ``memprof.instrument.session.track``.

    ``with memprof.track(model, opt) as prof: ...`` then ``prof.result`` (a Result).
    """
    from memprof.instrument.session import track as _track

    return _track(model, optimizer, name=name)


__all__ = ["MemprofError", "Memory", "Result", "ResultSet", "load_results", "profile", "track", "__version__"]
