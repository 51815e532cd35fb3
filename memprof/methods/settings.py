"""The checks method settings share (NOTE [ Method settings as data ]).

NOTE [ Method settings as data ]: as peft has one config class per method (``LoraConfig``,
``IA3Config``), each method here with hyper-parameters keeps them in one frozen dataclass in its own
module (``lora.LoraSettings``, ``adapter.AdapterSettings``, ``prefix.PrefixSettings``,
``topk.TopKSettings``, ``lst.LadderSettings``; the MEFT methods use ``meft.MEFTConfig``), validated
on construction, and generates its registry description from it, so each number is written once:
changing a default changes what is built and what ``memprof methods`` says together. The registry
keeps the settings with the method (``Method.settings``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from memprof.errors import MemprofError


def _refuse(method: str, name: str, value: Any, constraint: str, fix: str) -> MemprofError:
    return MemprofError(f"{method} setting {name}={value!r} must be {constraint}; {fix}")


def check_count(method: str, name: str, value: Any, example: int) -> None:
    """A whole number >= 1 (bool is no number here, though Python makes it an int)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise _refuse(method, name, value, "a whole number >= 1", f"pass e.g. {name}={example}")


def check_positive(method: str, name: str, value: Any, example: float) -> None:
    """A finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise _refuse(method, name, value, "a finite number > 0", f"pass e.g. {name}={example}")


def check_probability(method: str, name: str, value: Any, example: float) -> None:
    """A dropout probability in [0, 1) (1 would drop everything)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise _refuse(method, name, value, "a probability in [0, 1)", f"pass e.g. {name}={example}")


def check_flag(method: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _refuse(method, name, value, "True or False", f"pass {name}=True or {name}=False")


def check_word(method: str, name: str, value: Any, example: str) -> None:
    """A non-empty string (a name shown in the description)."""
    if not isinstance(value, str) or not value.strip():
        raise _refuse(method, name, value, "a non-empty string", f"pass e.g. {name}={example!r}")
