"""DoRA, weight-decomposed low-rank adaptation (Liu et al., ICML 2024, "DoRA: Weight-Decomposed
Low-Rank Adaptation"), through HF peft (``LoraConfig(use_dora=True)``) with LoRA's settings here:
r=8, alpha=16, dropout 0.1 on the family's LoRA targets (``Family.lora_targets``).

Each adapted weight W becomes m * (W + BA) / ||W + BA||: LoRA's A and B plus a trainable magnitude
vector m, one entry per output feature (peft's ``lora_magnitude_vector``); the task head trains too.
"""

from memprof.methods.lora import lora_model
from memprof.methods.registry import register


@register("dora", "DoRA (peft use_dora=True): LoRA r=8, alpha=16, dropout 0.1 plus a magnitude vector per weight",
          trains="LoRA A and B, one magnitude per output feature of each adapted weight, and the task head")
def apply(model, backbone, task):
    return lora_model(model, task, use_dora=True)
