"""Gradient checkpointing (non-reentrant, through transformers) on top of ``ft`` and ``lora``.

Each transformer layer keeps only its input; its activations are recomputed in backward.
"""

from memprof.methods import ft, lora
from memprof.methods.registry import register


def checkpoint(model):
    kwargs = {"use_reentrant": False}
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False  # what transformers would switch off itself, with a warning
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 renamed it
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


@register(
    "ft+ckpt", "full fine-tuning with gradient checkpointing per layer", trains="every parameter", layers_alike=True
)
def apply_ft(model, backbone, task):
    return ft.apply(checkpoint(model), backbone, task)


@register(
    "lora+ckpt",
    "LoRA with gradient checkpointing per layer",
    trains=lora.TRAINS,
    settings=lora.LORA,
    layers_alike=True,
)
def apply_lora(model, backbone, task):
    return lora.lora_model(checkpoint(model), task)
