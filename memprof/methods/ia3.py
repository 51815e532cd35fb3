"""(IA)3, infused adapter by inhibiting and amplifying inner activations (Liu et al., NeurIPS 2022,
"Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning"), through
HF peft with peft's defaults (so no settings of its own): its per-family targets
(``Profiling.ia3_targets``), each scaled by a learned vector initialised to ones, on its output, or on
its input for the feed-forward ones (``Profiling.ia3_feedforward``). The task head trains too
(``modules_to_save``).
"""

from memprof.methods.peft_wrap import peft_model
from memprof.methods.registry import register


def ia3_model(model, task):
    from peft import IA3Config

    from meft.families import family_of

    profiling = family_of(model).profiling
    return peft_model(
        model, task, IA3Config, profiling.ia3_targets, feedforward_modules=list(profiling.ia3_feedforward)
    )


@register(
    "ia3",
    "(IA)3 (peft): learned scaling vectors on keys, values and the feed-forward input",
    trains="one scaling vector per target module (its output width, feed-forward: its input width) and the task head",
    layers_alike=True,
)
def apply(model, backbone, task):
    return ia3_model(model, task)
