"""Top-k: only the top k transformer layers and the task head train; everything below them is
frozen, so backward stops at the lowest trainable layer (the cheap baseline the MEFT paper weighs
against memory-efficient methods: freezing the bottom saves the activations below it too).

k = ceil(layers / ``TOP_K.divisor``) of the top stack (by default the top quarter, at least one:
bert-base 3 of 12); an
encoder-decoder's top stack is its decoder, whose layers read the frozen encoder's output, so
nothing of the encoder trains. What sits above the top layer (a final norm, BERT's pooler) stays
frozen, as the embeddings do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from memprof.methods import settings
from memprof.methods.registry import freeze, register, unfreeze_head


@dataclass(frozen=True)
class TopKSettings:
    """The top 1 / ``divisor`` of the layers train (at least one)."""

    divisor: int = 4

    def __post_init__(self) -> None:
        settings.check_count("top-k", "divisor", self.divisor, 4)

    @property
    def description(self) -> str:
        return f"top-k: the top 1/{self.divisor} of the layers (at least one) and the head train, no backprop below"

    @property
    def trains(self) -> str:
        return f"the top ceil(layers / {self.divisor}) layers of the top stack, and the task head"


TOP_K = TopKSettings()


def top_layers(model, top_k: TopKSettings = TOP_K):
    """The layers that train: the top ceil(n / divisor) of the last layer stack the family names."""
    from meft.families import family_of

    layers = family_of(model).meft.find_sites(model)[-1].layers
    k = max(1, math.ceil(len(layers) / top_k.divisor))
    return list(layers)[-k:]


@register("top-k", TOP_K.description, trains=TOP_K.trains, settings=TOP_K)
def apply(model, backbone, task):
    freeze(model)
    for layer in top_layers(model):
        for p in layer.parameters():
            p.requires_grad_(True)
    unfreeze_head(model)
    return model
