"""Backbone families: one module each (``bert``, ``roberta``, ``bart``, ``opt``, ``llama``, ``qwen2``,
``mistral``, ``gpt2``), each defining ``FAMILY``, a ``meft.families.base.Family`` that holds
everything the project knows about it: MEFT's part (``ReversibleSites``) and memprof's
(``Profiling``). They are the only code that names a family; this module finds them (every module
of the package but ``base`` is one), so adding a family is adding its file.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from torch import nn

from meft.errors import MEFTError
from meft.families.base import Call, ConfigFields, Family, LayerKind, Profiling, ReversibleSites, Site, rest

__all__ = [
    "Call",
    "ConfigFields",
    "Family",
    "LayerKind",
    "Profiling",
    "ReversibleSites",
    "Site",
    "families",
    "family_named",
    "family_of",
    "rest",
    "supported_model_types",
]


@cache
def families() -> tuple[Family, ...]:
    """Every family, in module-name order."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name != "base":
            found.append(importlib.import_module(f"{__name__}.{info.name}").FAMILY)
    return tuple(found)


@cache
def _by_model_type() -> dict[str, Family]:
    return {t: f for f in families() for t in f.types}


def supported_model_types() -> tuple[str, ...]:
    return tuple(_by_model_type())


def family_named(model_type: str | None) -> Family:
    """The family of a HF ``model_type``, or MEFTError naming the supported ones."""
    family = _by_model_type().get(model_type)  # type: ignore[arg-type]
    if family is None:
        raise MEFTError(
            f"model_type {model_type!r} is not supported; supported model types are "
            f"{', '.join(supported_model_types())}: use a model of one of these families"
        )
    return family


def family_of(model: nn.Module) -> Family:
    """The family of a Hugging Face model, or MEFTError naming the supported ones."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in _by_model_type():
        raise MEFTError(
            f"model {type(model).__name__} (model_type {model_type!r}) is not supported; MEFT supports "
            f"{', '.join(supported_model_types())}: pass a Hugging Face model of one of these families"
        )
    return _by_model_type()[model_type]
