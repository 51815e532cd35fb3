"""The registry of fine-tuning methods.

A method turns a freshly built task model into one ready to train: it freezes what is frozen,
inserts what it inserts, and returns the model to train (peft returns a wrapper, so always use
the return value). Each method lives in its own module and registers itself on import
(``memprof.methods.registry``); adding a method touches no other file except the import list
below. A method's hyper-parameters are one frozen dataclass in its module, its description
generated from it (NOTE [ Method settings as data ] in ``memprof.methods.settings``); the methods
on HF peft share ``memprof.methods.peft_wrap``.
"""

from __future__ import annotations

from memprof.methods.registry import Method, get, names, register

# Each import registers its methods; the order here is the order users see.
# isort: off
from memprof.methods import ft, lora  # noqa: F401
from memprof.methods import adapter, ckpt  # noqa: F401
from memprof.methods import dora, ia3, prefix, bitfit, topk, lst  # noqa: F401
from memprof.methods import meft  # noqa: F401
# isort: on

__all__ = ["Method", "get", "names", "register"]
