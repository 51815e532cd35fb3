"""LoRA through HF peft: r=8, alpha=16, dropout 0.1, on the family's target modules (``Family.lora_targets``:
peft's defaults per family).

peft keeps the task head trainable (``modules_to_save``) for sequence classification.
"""

from memprof.methods.registry import head_modules, register

#: which parameters LoRA leaves trainable
TRAINS = "LoRA A and B matrices on the family's target modules, and the task head"

PEFT_TASK_TYPE = {"classification": "SEQ_CLS", "causal-lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}


def lora_model(model, task, **options):
    """peft LoRA with this module's settings; ``options`` go to ``LoraConfig`` too (DoRA: use_dora=True)."""
    import warnings

    from peft import LoraConfig, get_peft_model

    from meft.families import family_of

    # peft's own list ("classifier", "score") misses BART's "classification_head".
    heads = [name for name, mod in model.named_children() if any(mod is h for h in head_modules(model))]
    targets = family_of(model).lora_targets
    conv1d = type(model.get_submodule(_first(model, targets))).__name__ == "Conv1D"  # GPT-2: weights (in, out)
    config = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.1, task_type=PEFT_TASK_TYPE[task], modules_to_save=heads or None,
        target_modules=list(targets), fan_in_fan_out=conv1d, **options,
    )
    with warnings.catch_warnings():
        # peft still calls transformers' deprecated `is_gradient_checkpointing`.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def _first(model, targets) -> str:
    """The path of the first module LoRA adapts (its class says whether weights are stored (in, out))."""
    return next(name for name, _ in model.named_modules() if name.rpartition(".")[2] in targets)


@register("lora", "LoRA (peft): r=8, alpha=16, dropout 0.1 on the default target modules", trains=TRAINS)
def apply(model, backbone, task):
    return lora_model(model, task)
