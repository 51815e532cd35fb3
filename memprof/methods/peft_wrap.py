"""What the methods built on HF peft share (``lora``, ``dora``, ``lora+ckpt``, ``ia3``): the fields
every peft config gets from the built model and its family (task type, target modules, whether
weights are stored (in, out), the task head to keep trainable) and ``get_peft_model`` itself.

peft returns a wrapper: a method returns what ``peft_model`` returns, never the model it was given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from memprof.errors import MemprofError
from memprof.methods.registry import head_modules

#: memprof's task -> peft's task type
PEFT_TASK_TYPE = {"classification": "SEQ_CLS", "causal-lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}


def peft_model(
    model: nn.Module, task: str, config_class: Callable[..., Any], targets: Sequence[str], **options: Any
) -> nn.Module:
    """``get_peft_model(model, config_class(...))`` on ``targets`` (module names, from the family's
    ``Profiling``) with the task head trainable; ``options`` are the method's own config fields."""
    import warnings

    from peft import get_peft_model

    config = config_class(
        task_type=PEFT_TASK_TYPE[task],
        target_modules=list(targets),
        fan_in_fan_out=_weights_transposed(model, targets),
        modules_to_save=_head_names(model) or None,
        **options,
    )
    with warnings.catch_warnings():
        # peft still calls transformers' deprecated `is_gradient_checkpointing`.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def _head_names(model: nn.Module) -> list[str]:
    """The task head's attribute names: peft's own list ("classifier", "score") misses BART's
    "classification_head", so the family's heads go to ``modules_to_save``."""
    heads = head_modules(model)
    return [name for name, mod in model.named_children() if any(mod is h for h in heads)]


def _weights_transposed(model: nn.Module, targets: Sequence[str]) -> bool:
    """Whether the adapted modules store weights (in, out): transformers' Conv1D (GPT-2), judged by
    the first module the method adapts."""
    first = next((name for name, _ in model.named_modules() if name.rpartition(".")[2] in targets), None)
    if first is None:
        raise MemprofError(
            f"{type(model).__name__} has no module named {', '.join(targets)}; the method adapts those: "
            "pass a model of the family it was built for"
        )
    return type(model.get_submodule(first)).__name__ == "Conv1D"
