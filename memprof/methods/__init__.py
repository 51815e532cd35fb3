"""The registry of fine-tuning methods.

A method turns a freshly built task model into one ready to train: it freezes what is frozen,
inserts what it inserts, and returns the model to train (peft returns a wrapper, so always use
the return value). Each method lives in its own module and registers itself on import
(``memprof.methods.registry``); adding a method touches no other file except the import list
below.
"""

from __future__ import annotations

from memprof.methods.registry import Method, get, names, register

# Each import registers its methods; the order here is the order users see.
from memprof.methods import ft, lora  # noqa: E402,F401,I001
from memprof.methods import adapter, ckpt  # noqa: E402,F401,I001
from memprof.methods import dora, ia3, prefix, bitfit, topk, lst  # noqa: E402,F401,I001
from memprof.methods import meft  # noqa: E402,F401,I001

__all__ = ["Method", "get", "names", "register"]
