"""The registry itself: ``Method``, ``register``, ``get``, ``names``, and the helpers methods share
(freezing, the task head). The method modules import this; ``memprof.methods`` imports them.

NOTE [Third-party methods]: another package adds methods through the entry-point group
``memprof.methods``, e.g. in its pyproject.toml::

    [project.entry-points."memprof.methods"]
    prefix = "my_package.memprof_prefix"

Loading the entry point (importing that module, or the object ``module:attr`` names) must call
``register``, as the built-in method modules do. Entry points are loaded the first time a name is
looked up (``names``, ``get``), after the built-in methods, so importing memprof costs nothing and
a built-in name cannot be taken over. An entry point that fails to load, or registers a name twice,
is left out with a warning naming it: one broken package must not stop every profile.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from memprof.errors import MemprofError
from memprof.models.backbones import Backbone

#: apply(model, backbone, task) -> model ready to train
ApplyFn = Callable[[nn.Module, Backbone, str], nn.Module]


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    apply: ApplyFn
    #: the method this name stands for (``meft`` -> ``meft1``), or None
    alias_of: str | None = None
    #: which parameters train, in words (``memprof methods`` prints it)
    trains: str = ""
    #: the method's hyper-parameters, a frozen dataclass its description is generated from, or None
    #: for a method without any (NOTE [ Method settings as data ] in memprof.methods.settings)
    settings: Any = None
    #: whether the method treats every layer of a stack alike at any depth, so that a formula for a
    #: deep model can be composed from shallow copies of it (NOTE [ Composing depth ]); a method says
    #: so, else its formulas are traced whole (top-k does not: the depth decides which layers train)
    layers_alike: bool = False


_REGISTRY: dict[str, Method] = {}
#: the entry-point group third-party methods register through (NOTE [Third-party methods])
ENTRY_POINT_GROUP = "memprof.methods"
_entry_points_loaded = False


def register(
    name: str,
    description: str,
    *,
    alias_of: str | None = None,
    trains: str = "",
    settings: Any = None,
    layers_alike: bool = False,
) -> Callable[[ApplyFn], ApplyFn]:
    """Decorator: ``@register("ft", "full fine-tuning", trains="every parameter")`` on an
    ``apply(model, backbone, task)``; ``alias_of`` names the method another name stands for,
    ``trains`` says in words which parameters the method leaves trainable, ``settings`` holds its
    hyper-parameters (the description is generated from them); ``layers_alike=True`` where it treats
    every layer alike at any depth (``Method.layers_alike``)."""

    def deco(fn: ApplyFn) -> ApplyFn:
        if name in _REGISTRY:
            raise RuntimeError(f"method {name!r} registered twice")
        _REGISTRY[name] = Method(name, description, fn, alias_of, trains, settings, layers_alike)
        return fn

    return deco


def load_entry_points() -> None:
    """Import every ``memprof.methods`` entry point once (NOTE [Third-party methods])."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001 - any failure of a foreign package: leave it out
            where = f"{ep.dist.name} " if getattr(ep, "dist", None) is not None else ""
            warnings.warn(
                f"memprof method entry point {ep.name!r} ({where}{ep.value}) left out: "
                f"{type(exc).__name__}: {exc}; fix or uninstall that package",
                stacklevel=2,
            )


def names() -> list[str]:
    load_entry_points()
    return list(_REGISTRY)


def get(name: str) -> Method:
    load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MemprofError(f"unknown method {name!r}; use one of {', '.join(_REGISTRY)}") from None


def freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The task head a user fine-tunes (a classifier), never a tied LM head: the family's heads."""
    from meft.families import family_of

    return [module for _, module in family_of(model).head_modules(model)]


def unfreeze_head(model: nn.Module) -> None:
    for head in head_modules(model):
        for p in head.parameters():
            p.requires_grad_(True)
