"""Backbone families: the only code in meft that knows BERT, RoBERTa, BART or OPT.

A family answers three questions about a model (see MEFT.md and STYLE.md, habit 3):

- where the layers are: ``Family.sites(model)`` lists every layer stack as a ``Site`` (the module that
  loops over its layers, the attribute holding the ``nn.ModuleList``, a name for messages);
- how a layer is called: ``LayerKind.bind`` turns the arguments the stack's loop passes to a layer
  into the layer's input and a flat dict ``call`` of everything else (masks, encoder states, cache);
- how a layer splits: ``LayerKind.attention(layer, h, call)`` runs the attention block (BART's
  decoder: self- then cross-attention) and ``LayerKind.feed_forward(layer, h, call, adapter)`` the
  feed-forward block with an adapter in parallel; each returns the block's output after its
  residual add and LayerNorm, so ``feed_forward(attention(h))`` is the PLM layer.

The reversible machinery (meft.reversible) only ever calls these methods.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from meft.errors import MEFTError

Call = dict[str, Any]


class LayerKind:
    """How the layers of one stack are called and split into blocks."""

    def bind(self, layer: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[torch.Tensor, Call]:
        """Map a layer call ``layer(*args, **kwargs)`` to (hidden_states, call), by the layer's signature."""
        sig = _signature(type(layer))
        bound = sig.bind(*args, **kwargs)
        params = list(sig.parameters.values())
        call: Call = {}
        for name, value in bound.arguments.items():
            if sig.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                call.update(value)
            else:
                call[name] = value
        hidden = call.pop(params[0].name)
        return hidden, call

    def without_cache(self, call: Call) -> Call:
        """The call for a training pass: no key/value cache, since F and G run twice (forward, recompute)."""
        call = dict(call)
        if "cache" in call:
            call["cache"] = None
        if "use_cache" in call:
            call["use_cache"] = False
        return call

    def attention(self, layer: nn.Module, h: torch.Tensor, call: Call) -> torch.Tensor:
        raise NotImplementedError

    def feed_forward(self, layer: nn.Module, h: torch.Tensor, call: Call, adapter: nn.Module) -> torch.Tensor:
        raise NotImplementedError


_SIGNATURES: dict[type, inspect.Signature] = {}


def _signature(cls: type) -> inspect.Signature:
    if cls not in _SIGNATURES:
        sig = inspect.signature(cls.forward)  # follows functools.wraps (deprecate_kwarg)
        _SIGNATURES[cls] = sig.replace(parameters=list(sig.parameters.values())[1:])  # drop self
    return _SIGNATURES[cls]


def rest(call: Call, *names: str) -> Call:
    """``call`` without ``names``: the extra keyword arguments a layer forwards to its attention."""
    return {k: v for k, v in call.items() if k not in names}


@dataclass
class Site:
    """One layer stack: ``getattr(parent, attr)`` is its ``nn.ModuleList`` of layers."""

    name: str
    parent: nn.Module
    attr: str
    kind: LayerKind

    @property
    def layers(self) -> nn.ModuleList:
        return getattr(self.parent, self.attr)


@dataclass(frozen=True)
class Family:
    """What meft needs to know about one backbone family."""

    name: str
    find_sites: Callable[[nn.Module], list[Site]]
    check: Callable[[Any], None]  # raises MEFTError for configs the family cannot convert
    hidden_size: Callable[[Any], int]
    activation: Callable[[Any], str]
    heads: tuple[str, ...]  # attribute names of task heads on the top model; they stay trainable

    def sites(self, model: nn.Module) -> list[Site]:
        self.check(model.config)
        return self.find_sites(model)

    def head_modules(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        heads = ((name, getattr(model, name, None)) for name in self.heads)
        return [(name, module) for name, module in heads if isinstance(module, nn.Module)]


def _registry() -> dict[str, Family]:
    from meft.families import bart, bert, opt

    return {"bert": bert.FAMILY, "roberta": bert.FAMILY, "bart": bart.FAMILY, "opt": opt.FAMILY}


SUPPORTED = ("bert", "roberta", "bart", "opt")


def family_of(model: nn.Module) -> Family:
    """The family of a Hugging Face model, or MEFTError naming the supported ones."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SUPPORTED:
        raise MEFTError(
            f"model {type(model).__name__} (model_type {model_type!r}) is not supported; MEFT supports "
            f"{', '.join(SUPPORTED)}: pass a Hugging Face model of one of these families"
        )
    return _registry()[model_type]
