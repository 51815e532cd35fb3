"""Sequential bottleneck adapters (Houlsby et al., 2019, "Parameter-Efficient Transfer Learning
for NLP"): one after the attention block and one after the feed-forward block of every layer,
each ``y + up(act(down(y)))`` on the block's output projection, before the residual add and
LayerNorm. Trainable: adapters, LayerNorms and the task head, as in the paper.

The original Linear stays inside as ``base_layer``; ``remove_adapters`` undoes the conversion.
"""

from __future__ import annotations

import torch
from torch import nn

from memprof.methods.registry import freeze, register, unfreeze_head

#: Output projections, relative to each layer, that get an adapter: (attention, feed-forward).
PROJECTIONS = {
    "bert": ("attention.output.dense", "output.dense"),
    "roberta": ("attention.output.dense", "output.dense"),
    "bart": ("self_attn.out_proj", "fc2"),
    "opt": ("self_attn.out_proj", "fc2"),
}
REDUCTION_FACTOR = 16  # bottleneck = hidden / 16, AdapterHub's default for Houlsby adapters


class SequentialAdapter(nn.Module):
    """``base_layer`` followed by a residual bottleneck: y + up(gelu(down(y)))."""

    def __init__(self, base_layer: nn.Linear, bottleneck: int, init_std: float = 0.02):
        super().__init__()
        self.base_layer = base_layer
        h = base_layer.out_features
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


def layer_modules(model: nn.Module) -> list[nn.Module]:
    """Every transformer layer (encoder and decoder), found where meft.families says the stacks are."""
    from meft.families import family_of

    return [layer for site in family_of(model).sites(model) for layer in site.layers]


def add_adapters(model: nn.Module, family: str) -> nn.Module:
    for layer in layer_modules(model):
        for path in PROJECTIONS[family]:
            parent_path, _, attr = path.rpartition(".")
            parent = layer.get_submodule(parent_path) if parent_path else layer
            base = getattr(parent, attr)
            if isinstance(base, nn.Linear):
                setattr(parent, attr, SequentialAdapter(base, max(1, base.out_features // REDUCTION_FACTOR)))
    return model


def remove_adapters(model: nn.Module) -> nn.Module:
    for name, module in list(model.named_modules()):
        for attr, child in list(module.named_children()):
            if isinstance(child, SequentialAdapter):
                setattr(module, attr, child.base_layer)
    return model


@register("adapter", "sequential bottleneck adapters (Houlsby), hidden/16, after attention and feed-forward")
def apply(model, backbone, task):
    freeze(model)
    add_adapters(model, backbone.family)
    for module in model.modules():
        if isinstance(module, (SequentialAdapter, nn.LayerNorm)):
            for name, p in module.named_parameters():
                if not name.startswith("base_layer."):
                    p.requires_grad_(True)
    unfreeze_head(model)
    return model
