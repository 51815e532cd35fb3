"""The three MEFT variants as sub-networks F and G of one reversible layer (docs/MEFT.md, "The three variants").

    meft1: F = PLM layer with a parallel feed-forward adapter,  G = adapter
    meft2: F = adapter,  G = PLM layer with a parallel feed-forward adapter
    meft3: F = attention block followed by an adapter (a + adapter(a)),
           G = feed-forward block with its parallel adapter

Every layer gets two adapters, named by where they sit: "ffn" (parallel to the feed-forward block),
"g" (meft1's G), "f" (meft2's F), "attn" (meft3's, on the attention output). F and G are built from
the family's ``LayerKind`` only, so nothing here knows the family.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from meft.adapter import Adapter
from meft.config import MEFTConfig
from meft.coupling import SubNet
from meft.families import Call, LayerKind

ADAPTER_SLOTS = {"meft1": ("ffn", "g"), "meft2": ("f", "ffn"), "meft3": ("attn", "ffn")}


def adapter_slots(config: MEFTConfig, top: bool) -> tuple[str, ...]:
    """The adapters a layer gets. meft1's top layer under merge="plm" has no G adapter: its output
    would only reach the stream that the merge drops (meft.config NOTE [ Which stream carries the PLM ]),
    so it would never receive a gradient."""
    slots = ADAPTER_SLOTS[config.variant]
    if top and config.variant == "meft1" and config.merge == "plm":
        return tuple(s for s in slots if s != "g")
    return slots


def make_adapters(
    config: MEFTConfig, hidden_size: int, activation: str, like: torch.Tensor, top: bool = False
) -> nn.ModuleDict:
    """The adapters of one layer (``top``: the stack's last), on the device and in the dtype of ``like``."""
    return nn.ModuleDict(
        {
            slot: Adapter(
                hidden_size,
                config.adapter_dim,
                activation,
                config.adapter_dropout,
                config.init_std,
                device=like.device,
                dtype=like.dtype,
            )
            for slot in adapter_slots(config, top)
        }
    )


def _plm_layer(kind: LayerKind, layer: nn.Module, adapter: nn.Module, h: torch.Tensor, call: Call) -> torch.Tensor:
    return kind.feed_forward(layer, kind.attention(layer, h, call), call, adapter)


def _attention_then_adapter(
    kind: LayerKind, layer: nn.Module, adapter: nn.Module, h: torch.Tensor, call: Call
) -> torch.Tensor:
    a = kind.attention(layer, h, call)
    return a + adapter(a)


def _feed_forward(kind: LayerKind, layer: nn.Module, adapter: nn.Module, h: torch.Tensor, call: Call) -> torch.Tensor:
    return kind.feed_forward(layer, h, call, adapter)


def _adapter(adapter: nn.Module, h: torch.Tensor, call: Call) -> torch.Tensor:
    return adapter(h)


def sub_networks(
    variant: str, kind: LayerKind, layer: nn.Module, adapters: nn.ModuleDict
) -> tuple[SubNet, SubNet | None]:
    """(F, G) of one layer for ``variant``; G is None (G = 0) where the layer has no G adapter."""
    if variant == "meft1":
        g = partial(_adapter, adapters["g"]) if "g" in adapters else None
        return partial(_plm_layer, kind, layer, adapters["ffn"]), g
    if variant == "meft2":
        return partial(_adapter, adapters["f"]), partial(_plm_layer, kind, layer, adapters["ffn"])
    f = partial(_attention_then_adapter, kind, layer, adapters["attn"])
    return f, partial(_feed_forward, kind, layer, adapters["ffn"])
