"""The registry itself: ``Method``, ``register``, ``get``, ``names``, and the helpers methods share
(freezing, the task head). The method modules import this; ``memprof.methods`` imports them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from memprof.backbones import Backbone
from memprof.errors import MemprofError

#: apply(model, backbone, task) -> model ready to train
ApplyFn = Callable[[nn.Module, Backbone, str], nn.Module]


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    apply: ApplyFn
    #: the method this name stands for (``meft`` -> ``meft1``), or None
    alias_of: str | None = None


_REGISTRY: dict[str, Method] = {}


def register(name: str, description: str, *, alias_of: str | None = None) -> Callable[[ApplyFn], ApplyFn]:
    """Decorator: ``@register("ft", "full fine-tuning")`` on an ``apply(model, backbone, task)``;
    ``alias_of`` names the method another name stands for."""

    def deco(fn: ApplyFn) -> ApplyFn:
        if name in _REGISTRY:
            raise RuntimeError(f"method {name!r} registered twice")
        _REGISTRY[name] = Method(name, description, fn, alias_of)
        return fn

    return deco


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> Method:
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
