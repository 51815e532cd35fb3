"""Sequential bottleneck adapters (Houlsby et al., 2019, "Parameter-Efficient Transfer Learning
for NLP"): one after the attention block and one after the feed-forward block of every layer,
each ``y + up(act(down(y)))`` on the block's output projection, before the residual add and
LayerNorm. Trainable: adapters, LayerNorms and the task head, as in the paper.

``adapter-pfeiffer`` (Pfeiffer et al., EACL 2021, "AdapterFusion: Non-Destructive Task Composition
for Transfer Learning"): one such adapter per layer, after the feed-forward block only, reduction
factor 16 (AdapterHub's ``SeqBnConfig``); only the adapters and the task head train (AdapterHub's
``train_adapter`` freezes the LayerNorms).

The original Linear stays inside as ``base_layer``; ``remove_adapters`` undoes the conversion.
"""

from __future__ import annotations

import torch
from torch import nn

from memprof.methods.registry import freeze, register, unfreeze_head

REDUCTION_FACTOR = 16  # bottleneck = hidden / 16, AdapterHub's default for Houlsby adapters


class SequentialAdapter(nn.Module):
    """``base_layer`` followed by a residual bottleneck: y + up(gelu(down(y)))."""

    def __init__(self, base_layer: nn.Linear, bottleneck: int, init_std: float = 0.02):
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
    return [layer for site in family_of(model).find_sites(model) for layer in site.layers]


def add_adapters(model: nn.Module, feed_forward_only: bool = False) -> nn.Module:
    """A sequential adapter on each output projection the family names (``Family.adapter_projections``:
    attention, feed-forward), or on the feed-forward one only."""
    from meft.families import family_of

    projections = family_of(model).adapter_projections
    for layer in layer_modules(model):
        for path in projections[1:] if feed_forward_only else projections:
            parent_path, _, attr = path.rpartition(".")
            parent = layer.get_submodule(parent_path) if parent_path else layer
            base = getattr(parent, attr)
            if _projection(base):
                setattr(parent, attr, SequentialAdapter(base, max(1, _out_features(base) // REDUCTION_FACTOR)))
    return model


def remove_adapters(model: nn.Module) -> nn.Module:
    for name, module in list(model.named_modules()):
        for attr, child in list(module.named_children()):
            if isinstance(child, SequentialAdapter):
                setattr(module, attr, child.base_layer)
    return model


@register("adapter", "sequential bottleneck adapters (Houlsby), hidden/16, after attention and feed-forward",
          trains="adapters, LayerNorms (or RMSNorms) and the task head")
def apply(model, backbone, task):
    freeze(model)
    add_adapters(model)
    for module in model.modules():
        if isinstance(module, SequentialAdapter) or _is_norm(module):
            for name, p in module.named_parameters():
                if not name.startswith("base_layer."):
                    p.requires_grad_(True)
    unfreeze_head(model)
    return model


@register("adapter-pfeiffer", "sequential bottleneck adapter (Pfeiffer), hidden/16, after the feed-forward block only",
          trains="adapters and the task head")
def apply_pfeiffer(model, backbone, task):
    freeze(model)
    add_adapters(model, feed_forward_only=True)
    for module in model.modules():
        if isinstance(module, SequentialAdapter):
            for name, p in module.named_parameters():
                if not name.startswith("base_layer."):
                    p.requires_grad_(True)
    unfreeze_head(model)
    return model
