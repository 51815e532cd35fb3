"""memprof: per-layer activation-memory profiling of transformer fine-tuning."""

__version__ = "0.1.0"

from memprof.errors import MemprofError  # noqa: E402
from memprof.result import Memory, Result, ResultSet, load_results  # noqa: E402

__all__ = ["MemprofError", "Memory", "Result", "ResultSet", "load_results", "__version__"]
