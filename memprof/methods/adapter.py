"""Sequential bottleneck adapters (Houlsby et al., 2019, "Parameter-Efficient Transfer Learning
for NLP"): one after the attention block and one after the feed-forward block of every layer,
each ``y + up(act(down(y)))`` on the block's output projection, before the residual add and
LayerNorm. Trainable: adapters, LayerNorms and the task head, as in the paper.

``adapter-pfeiffer`` (Pfeiffer et al., EACL 2021, "AdapterFusion: Non-Destructive Task Composition
for Transfer Learning"): one such adapter per layer, after the feed-forward block only, the same
reduction factor (AdapterHub's ``SeqBnConfig``); only the adapters and the task head train
(AdapterHub's ``train_adapter`` freezes the LayerNorms). Both are ``AdapterSettings``: ``HOULSBY``
and ``PFEIFFER``.

The original Linear stays inside as ``base_layer``; ``remove_adapters`` undoes the conversion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from memprof.methods import settings
from memprof.methods.registry import freeze, register, unfreeze_head


@dataclass(frozen=True)
class AdapterSettings:
    """One style of sequential bottleneck adapters: ``style`` names it (the paper), the bottleneck is
    hidden / ``reduction_factor``, placed after the attention and feed-forward blocks or after the
    feed-forward block only; ``train_norms`` trains the LayerNorms (RMSNorms) too."""

    style: str
    reduction_factor: int = 16  # AdapterHub's default for Houlsby and Pfeiffer adapters
    feed_forward_only: bool = False
    train_norms: bool = True
    init_std: float = 0.02  # of the down projection; the up projection starts at zero

    def __post_init__(self) -> None:
        method = "adapter"
        settings.check_word(method, "style", self.style, "Houlsby")
        settings.check_count(method, "reduction_factor", self.reduction_factor, 16)
        settings.check_flag(method, "feed_forward_only", self.feed_forward_only)
        settings.check_flag(method, "train_norms", self.train_norms)
        settings.check_positive(method, "init_std", self.init_std, 0.02)

    @property
    def description(self) -> str:
        size = f"({self.style}), hidden/{self.reduction_factor}"
        if self.feed_forward_only:
            return f"sequential bottleneck adapter {size}, after the feed-forward block only"
        return f"sequential bottleneck adapters {size}, after attention and feed-forward"

    @property
    def trains(self) -> str:
        if self.train_norms:
            return "adapters, LayerNorms (or RMSNorms) and the task head"
        return "adapters and the task head"


HOULSBY = AdapterSettings("Houlsby")
PFEIFFER = AdapterSettings("Pfeiffer", feed_forward_only=True, train_norms=False)


class SequentialAdapter(nn.Module):
    """``base_layer`` followed by a residual bottleneck: y + up(gelu(down(y)))."""

    def __init__(self, base_layer: nn.Linear, bottleneck: int, init_std: float):
        super().__init__()
        self.base_layer = base_layer
        h = _out_features(base_layer)
        kw = dict(device=base_layer.weight.device, dtype=base_layer.weight.dtype)
        self.down = nn.Linear(h, bottleneck, **kw)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, h, **kw)
        if base_layer.weight.device.type != "meta":
            # Near-identity start: the converted model computes what the pre-trained one does.
            nn.init.normal_(self.down.weight, std=init_std)
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # (B, S, H)
        return y + self.up(self.act(self.down(y)))


def _out_features(layer: nn.Module) -> int:
    """An nn.Linear's output width, or a transformers Conv1D's (GPT-2's projections: weight (in, out))."""
    return layer.out_features if isinstance(layer, nn.Linear) else int(layer.weight.shape[1])


def _projection(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _is_norm(module: nn.Module) -> bool:
    """LayerNorm, or an RMSNorm of the Llama-style decoders (each family defines its own class)."""
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or type(module).__name__.endswith("RMSNorm")


def layer_modules(model: nn.Module) -> list[nn.Module]:
    """Every transformer layer (encoder and decoder), found where meft.families says the stacks are."""
    from meft.families import family_of

    # find_sites, not sites: the conversion checks are MEFT's, not the adapters' (a Qwen2 with mixed
    # attention types takes adapters as any other)
    return [layer for site in family_of(model).meft.find_sites(model) for layer in site.layers]


def add_adapters(model: nn.Module, adapters: AdapterSettings = HOULSBY) -> nn.Module:
    """A sequential adapter on each output projection the family names (``Profiling.adapter_projections``:
    attention, feed-forward), or on the feed-forward one only."""
    from meft.families import family_of

    projections = family_of(model).profiling.adapter_projections
    for layer in layer_modules(model):
        for path in projections[1:] if adapters.feed_forward_only else projections:
            parent_path, _, attr = path.rpartition(".")
            parent = layer.get_submodule(parent_path) if parent_path else layer
            base = getattr(parent, attr)
            if _projection(base):
                bottleneck = max(1, _out_features(base) // adapters.reduction_factor)
                setattr(parent, attr, SequentialAdapter(base, bottleneck, adapters.init_std))
    return model


def remove_adapters(model: nn.Module) -> nn.Module:
    for module in list(model.modules()):
        for attr, child in list(module.named_children()):
            if isinstance(child, SequentialAdapter):
                setattr(module, attr, child.base_layer)
    return model


def _apply(adapters: AdapterSettings):
    def apply(model, backbone, task):
        freeze(model)
        add_adapters(model, adapters)
        for module in model.modules():
            if isinstance(module, SequentialAdapter) or (adapters.train_norms and _is_norm(module)):
                for name, p in module.named_parameters():
                    if not name.startswith("base_layer."):
                        p.requires_grad_(True)
        unfreeze_head(model)
        return model

    apply.__name__ = f"apply_{adapters.style.lower()}"
    return apply


for _name, _adapters in (("adapter", HOULSBY), ("adapter-pfeiffer", PFEIFFER)):
    register(_name, _adapters.description, trains=_adapters.trains, settings=_adapters, layers_alike=True)(
        _apply(_adapters)
    )
