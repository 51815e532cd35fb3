"""BitFit (Ben Zaken, Ravfogel and Goldberg, ACL 2022, "BitFit: Simple Parameter-efficient
Fine-tuning for Transformer-based Masked Language-models"): every bias term of the model trains
(attention, feed-forward, LayerNorm biases), and the task head; nothing else.

A family whose layers have no bias terms (``Profiling.bias_terms`` false: Llama, Mistral) would train
only its head, which is not BitFit: such a model is refused, naming the families that have biases.
"""

from memprof.errors import MemprofError
from memprof.methods.registry import freeze, head_modules, register, unfreeze_head


def _head_parameters(model) -> set[int]:
    return {id(p) for head in head_modules(model) for p in head.parameters()}


@register(
    "bitfit",
    "BitFit: only the bias terms and the task head train",
    trains="every bias term (attention, feed-forward, LayerNorm) and the task head",
    layers_alike=True,
)
def apply(model, backbone, task):
    from meft.families import families, family_of

    head = _head_parameters(model)
    biases = [p for name, p in model.named_parameters() if name.rpartition(".")[2] == "bias" and id(p) not in head]
    if not biases:
        family = family_of(model)
        with_biases = ", ".join(f.name for f in families() if f.profiling.bias_terms)
        raise MemprofError(
            f"method bitfit trains bias terms and this {family.name} model has none outside its head; "
            f"bitfit supports the families with biases: {with_biases}: use one of them"
        )
    freeze(model)
    for p in biases:
        p.requires_grad_(True)
    unfreeze_head(model)
    return model
