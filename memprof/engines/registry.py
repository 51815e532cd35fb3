"""The engine table: each engine's name and the module that defines it (its ``ENGINE``, a
``memprof.engines.base.Engine``). An engine module is imported the first time its engine is asked
for, so importing ``memprof.engines.config`` loads none of them.

NOTE [ Where the engine table lives ]
``ProfileConfig`` (config.py) validates an engine name against this table, and ``memprof.engines``
(``__init__.py``) imports config.py: a table in ``__init__.py`` would make the two import each
other (tests/test_layering.py refuses the cycle). So the table lives here, importing nothing of
``memprof.engines``, and ``__init__.py`` re-exports it. For the same reason nothing here names the
``Engine`` type: base.py imports common.py, which imports config.py, which imports this module.
"""

from __future__ import annotations

import importlib
from typing import Any

from memprof.errors import MemprofError

__all__ = ["ENGINE_MODULES", "engine_named", "engine_names", "traceable"]

#: engine name -> the module whose ``ENGINE`` it is. Adding an engine: one module, one entry here.
ENGINE_MODULES: dict[str, str] = {
    "fake": "memprof.engines.fake",
    "cpu": "memprof.engines.cpu",
    "cuda": "memprof.engines.cuda",
}


def engine_names() -> tuple[str, ...]:
    """The engines' names, in the order messages list them."""
    return tuple(ENGINE_MODULES)


def engine_named(name: str) -> Any:
    """The ``Engine`` called ``name`` (its module imported now if it was not yet); MemprofError
    naming the known engines if there is none."""
    module = ENGINE_MODULES.get(name)
    if module is None:
        raise MemprofError(f"unknown engine {name!r}; use one of {', '.join(ENGINE_MODULES)}")
    return importlib.import_module(module).ENGINE


def traceable(name: str) -> bool:
    """Whether ``name`` is an engine whose step can be traced into a closed form (``Engine.traceable``:
    formulas, ``compare``); False for a name that is no engine."""
    return name in ENGINE_MODULES and engine_named(name).traceable
