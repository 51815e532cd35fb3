"""DoRA, weight-decomposed low-rank adaptation (Liu et al., ICML 2024, "DoRA: Weight-Decomposed
Low-Rank Adaptation"), through HF peft (``LoraConfig(use_dora=True)``) with LoRA's settings here
(``DORA``: ``lora.LORA`` with ``use_dora``) on the family's LoRA targets (``Profiling.lora_targets``).

Each adapted weight W becomes m * (W + BA) / ||W + BA||: LoRA's A and B plus a trainable magnitude
vector m, one entry per output feature (peft's ``lora_magnitude_vector``); the task head trains too.
"""

from dataclasses import replace

from memprof.methods.lora import LORA, lora_model
from memprof.methods.registry import register

DORA = replace(LORA, use_dora=True)


@register(
    "dora",
    DORA.description,
    settings=DORA,
    trains="LoRA A and B, one magnitude per output feature of each adapted weight, and the task head",
    layers_alike=True,
)
def apply(model, backbone, task):
    return lora_model(model, task, DORA)
