"""The registry of fine-tuning methods.

A method turns a freshly built task model into one ready to train: it freezes what is frozen,
inserts what it inserts, and returns the model to train (peft returns a wrapper, so always use
the return value). Each method lives in its own module and registers itself on import; adding a
method touches no other file except the import list at the bottom of this one.
"""

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
    #: A method the memprof profiler can build on the meta device (all do, unless said otherwise).
    meta_ok: bool = True


_REGISTRY: dict[str, Method] = {}


def register(name: str, description: str, *, meta_ok: bool = True) -> Callable[[ApplyFn], ApplyFn]:
    """Decorator: ``@register("ft", "full fine-tuning")`` on an ``apply(model, backbone, task)``."""

    def deco(fn: ApplyFn) -> ApplyFn:
        if name in _REGISTRY:
            raise RuntimeError(f"method {name!r} registered twice")
        _REGISTRY[name] = Method(name, description, fn, meta_ok)
        return fn

    return deco


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> Method:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MemprofError(f"unknown method {name!r}; use one of {', '.join(_REGISTRY)}") from None


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared parameter once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The task head a user fine-tunes (classifier), not a tied LM head."""
    heads = []
    for attr in ("classifier", "classification_head", "score"):
        mod = getattr(model, attr, None)
        if isinstance(mod, nn.Module):
            heads.append(mod)
    return heads


def unfreeze_head(model: nn.Module) -> None:
    for head in head_modules(model):
        for p in head.parameters():
            p.requires_grad_(True)


# Each import registers its methods; the order here is the order users see.
from memprof.methods import ft, lora  # noqa: E402,F401,I001
from memprof.methods import adapter, ckpt, meft  # noqa: E402,F401,I001
