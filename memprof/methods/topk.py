"""Top-k: only the top k transformer layers and the task head train; everything below them is
frozen, so backward stops at the lowest trainable layer (the cheap baseline the MEFT paper weighs
against memory-efficient methods: freezing the bottom saves the activations below it too).

k = ceil(layers / 4) of the top stack (the top quarter, at least one: bert-base 3 of 12); an
encoder-decoder's top stack is its decoder, whose layers read the frozen encoder's output, so
nothing of the encoder trains. What sits above the top layer (a final norm, BERT's pooler) stays
frozen, as the embeddings do.
"""

from __future__ import annotations

import math

from memprof.methods.registry import freeze, register, unfreeze_head

FRACTION = 4  # the top 1/4 of the layers train


def top_layers(model):
    """The layers that train: the top ceil(n / 4) of the last layer stack the family names."""
    from meft.families import family_of

    layers = family_of(model).find_sites(model)[-1].layers
    k = max(1, math.ceil(len(layers) / FRACTION))
    return list(layers)[-k:]


@register("top-k", "top-k: the top quarter of the layers (at least one) and the head train, no backprop below",
          trains="the top ceil(layers / 4) layers of the top stack, and the task head")
def apply(model, backbone, task):
    freeze(model)
    for layer in top_layers(model):
        for p in layer.parameters():
            p.requires_grad_(True)
    unfreeze_head(model)
    return model
