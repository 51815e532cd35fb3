"""The measuring instruments of one training step.

* ``saved``: saved-tensor hooks -- what the forward keeps for backward, per module and category.
* ``live``: a dispatch mode over the whole step -- every storage's life, the peak and its split.
* ``categories``: autograd node name -> category; ``modules``: which module is running.
* ``session``: the two together with their phase marks (``Instrument``), and ``track`` for a
  user's own training loop.
"""

from memprof.instrument.live import LiveSummary, LiveTracker
from memprof.instrument.modules import ModuleStack, module_paths
from memprof.instrument.saved import SavedSummary, SavedTensorTracker
from memprof.instrument.session import Instrument, Measurement, TrackedStep, track

__all__ = [
    "Instrument",
    "LiveSummary",
    "LiveTracker",
    "Measurement",
    "ModuleStack",
    "SavedSummary",
    "SavedTensorTracker",
    "TrackedStep",
    "module_paths",
    "track",
]
