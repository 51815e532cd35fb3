"""What a backbone family is: ``Family`` (everything the project knows about one family, in two
parts by client: ``ReversibleSites`` for MEFT, ``Profiling`` for memprof), ``LayerKind`` (how a
stack's layers are called and split for MEFT), ``Site`` (one layer stack).

A family answers, for MEFT (``Family.meft``; docs/MEFT.md; one family, one file):

- where the layers are: ``Family.sites(model)`` lists every layer stack as a ``Site`` (the module that
  loops over its layers, the attribute holding the ``nn.ModuleList``, a name for messages);
- how a layer is called: ``LayerKind.bind`` turns the arguments the stack's loop passes to a layer
  into the layer's input and a flat dict ``call`` of everything else (masks, encoder states, cache);
- how a layer splits: ``LayerKind.attention(layer, h, call)`` runs the attention block (BART's
  decoder: self- then cross-attention) and ``LayerKind.feed_forward(layer, h, call, adapter)`` the
  feed-forward block with an adapter in parallel; each returns the block's output after its
  residual add (and, post-LN, its LayerNorm), so ``feed_forward(attention(h))`` is the PLM layer;

and, for memprof (``Family.profiling``), what its registry entries, tasks, method targets and
synthetic batches are. meft reads only ``Family.meft`` and what both share (NOTE [ Two clients of a
family ]).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
        """The call for a training pass: no key/value cache (F and G run twice, forward and recompute; and the
        ordinary layers too, so both paths give attention the same key layout: ``MEFTStack.forward``)."""
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
class ConfigFields:
    """Where a family's HF config keeps what the tools read (attribute names of the config)."""

    hidden: str = "hidden_size"
    heads: str = "num_attention_heads"
    #: layer counts, summed (an encoder-decoder has two)
    layers: tuple[str, ...] = ("num_hidden_layers",)
    positions: str = "max_position_embeddings"
    vocab: str = "vocab_size"
    activation: str = "hidden_act"
    #: grouped-query attention's key/value heads, for families that have it
    kv_heads: str | None = None


# NOTE [ Two clients of a family ]
# A family serves MEFT (where the layer stacks are, what it refuses, which heads stay trainable) and
# memprof (registry entries, tasks, each method's targets, what a synthetic batch needs). Each client's
# part is its own dataclass, so a change for one cannot reach the other unseen: meft reads
# ``Family.meft`` only (tests/test_families.py checks that no meft module outside the family files
# reads ``.profiling``); memprof reads both, as it may import meft. ``Profiling`` is defined here, not in
# memprof, because the one file of each family lives in meft, which imports nothing of memprof. What
# both read (the name, the HF model types, the config's field names) sits on ``Family`` itself.


@dataclass(frozen=True)
class ReversibleSites:
    """MEFT's part of a family: where the layer stacks are, what cannot be converted, the task heads."""

    find_sites: Callable[[nn.Module], list[Site]]
    check: Callable[[Any], None]  # raises MEFTError for configs the family cannot convert
    heads: tuple[str, ...]  # attribute names of task heads on the top model; they stay trainable


@dataclass(frozen=True)
class Profiling:
    """memprof's part of a family: its registry entries (``backbones``: name -> published HF config
    kwargs), its tasks (the first is the default), each method's targets (peft's defaults for the
    family), and what a synthetic batch needs. meft never reads it."""

    tasks: tuple[str, ...]  # memprof's task names; the first is the default
    lora_targets: tuple[str, ...]  # module names LoRA adapts (peft's defaults for the family)
    #: (attention block, feed-forward block) output projections, relative to a layer, that get a
    #: sequential bottleneck adapter
    adapter_projections: tuple[str, str]
    backbones: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    #: position slots the embeddings reserve (RoBERTa: padding_idx + 1), from the config dict
    reserved_positions: Callable[[dict[str, Any]], int] = lambda config: 0
    #: synthetic batches: token ids start here (above the special tokens) ...
    first_token: int = 4
    #: ... and every row ends in the end-of-sentence token (BART's classification head reads it)
    eos_last: bool = False
    #: (IA)3's target modules, and which of them are feed-forward (scaled on their input, not their
    #: output): peft's defaults for the family
    ia3_targets: tuple[str, ...] = ()
    ia3_feedforward: tuple[str, ...] = ()
    #: whether the published configs have bias terms outside the head (BitFit trains them)
    bias_terms: bool = True

    def __post_init__(self) -> None:
        if not self.tasks or not self.lora_targets:
            raise MEFTError(
                f"Profiling(tasks={self.tasks!r}, lora_targets={self.lora_targets!r}) leaves one empty; "
                "name at least one task and one LoRA target module"
            )
        if len(self.adapter_projections) != 2:
            raise MEFTError(
                f"adapter_projections={self.adapter_projections!r} is not two paths; name the attention "
                "block's and the feed-forward block's output projections"
            )
        if not set(self.ia3_feedforward) <= set(self.ia3_targets):
            raise MEFTError(
                f"ia3_feedforward={self.ia3_feedforward!r} names modules outside ia3_targets="
                f"{self.ia3_targets!r}; list only (IA)3 targets as feed-forward"
            )


@dataclass(frozen=True)
class Family:
    """Everything the project knows about one backbone family: the one place that names it.

    ``meft`` is MEFT's part, ``profiling`` memprof's (NOTE [ Two clients of a family ]); both read the
    HF ``model_types`` it covers (default: its name) and the config's field names (``fields``).
    """

    name: str
    meft: ReversibleSites
    profiling: Profiling
    model_types: tuple[str, ...] = ()  # HF model_type values; default: (name,)
    fields: ConfigFields = ConfigFields()

    @property
    def types(self) -> tuple[str, ...]:
        return self.model_types or (self.name,)

    def sites(self, model: nn.Module) -> list[Site]:
        """The layer stacks MEFT converts, after the family's checks (``meft.find_sites`` skips them)."""
        self.meft.check(model.config)
        return self.meft.find_sites(model)

    def head_modules(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        heads = ((name, getattr(model, name, None)) for name in self.meft.heads)
        return [(name, module) for name, module in heads if isinstance(module, nn.Module)]

    def hidden_size(self, config: Any) -> int:
        return int(getattr(config, self.fields.hidden))

    def activation(self, config: Any) -> str:
        return getattr(config, self.fields.activation)
