"""LoRA through HF peft: r=8, alpha=16, dropout 0.1, peft's default target modules per family.

peft keeps the task head trainable (``modules_to_save``) for sequence classification.
"""

from memprof.methods.registry import head_modules, register

PEFT_TASK_TYPE = {"classification": "SEQ_CLS", "causal-lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}


def lora_model(model, task):
    import warnings

    from peft import LoraConfig, get_peft_model

    # peft's own list ("classifier", "score") misses BART's "classification_head".
    heads = [name for name, mod in model.named_children() if any(mod is h for h in head_modules(model))]
    config = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.1, task_type=PEFT_TASK_TYPE[task], modules_to_save=heads or None
    )
    with warnings.catch_warnings():
        # peft still calls transformers' deprecated `is_gradient_checkpointing`.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


@register("lora", "LoRA (peft): r=8, alpha=16, dropout 0.1 on the default target modules")
def apply(model, backbone, task):
    return lora_model(model, task)
