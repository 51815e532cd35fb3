"""(IA)3, infused adapter by inhibiting and amplifying inner activations (Liu et al., NeurIPS 2022,
"Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning"), through
HF peft with peft's defaults: its per-family targets (``Family.ia3_targets``), each scaled by a
learned vector initialised to ones, on its output, or on its input for the feed-forward ones
(``Family.ia3_feedforward``). The task head trains too (``modules_to_save``).
"""

from memprof.methods.lora import PEFT_TASK_TYPE, _first
from memprof.methods.registry import head_modules, register


def ia3_model(model, task):
    import warnings

    from peft import IA3Config, get_peft_model

    from meft.families import family_of

    family = family_of(model)
    heads = [name for name, mod in model.named_children() if any(mod is h for h in head_modules(model))]
    targets = family.ia3_targets
    conv1d = type(model.get_submodule(_first(model, targets))).__name__ == "Conv1D"  # GPT-2: weights (in, out)
    config = IA3Config(task_type=PEFT_TASK_TYPE[task], target_modules=list(targets), fan_in_fan_out=conv1d,
                       feedforward_modules=list(family.ia3_feedforward), modules_to_save=heads or None)
    with warnings.catch_warnings():
        # peft still calls transformers' deprecated `is_gradient_checkpointing`.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


@register("ia3", "(IA)3 (peft): learned scaling vectors on keys, values and the feed-forward input",
          trains="one scaling vector per target module (its output width, feed-forward: its input width) and "
                 "the task head")
def apply(model, backbone, task):
    return ia3_model(model, task)
