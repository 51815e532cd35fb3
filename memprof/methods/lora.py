"""LoRA through HF peft with ``LORA``'s settings (``LoraSettings``' defaults), on the family's target
modules (``Profiling.lora_targets``: peft's defaults per family).

peft keeps the task head trainable (``modules_to_save``) for sequence classification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memprof.methods import settings
from memprof.methods.peft_wrap import peft_model
from memprof.methods.registry import register

#: which parameters LoRA leaves trainable
TRAINS = "LoRA A and B matrices on the family's target modules, and the task head"


@dataclass(frozen=True)
class LoraSettings:
    """LoRA's hyper-parameters, as peft's ``LoraConfig`` names them (``r``, ``lora_alpha``,
    ``lora_dropout``, ``use_dora``); DoRA is LoRA with ``use_dora``."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    use_dora: bool = False

    def __post_init__(self) -> None:
        method = "dora" if self.use_dora is True else "lora"
        settings.check_count(method, "r", self.r, 8)
        settings.check_positive(method, "alpha", self.alpha, 16)
        settings.check_probability(method, "dropout", self.dropout, 0.1)
        settings.check_flag(method, "use_dora", self.use_dora)

    @property
    def summary(self) -> str:
        """``r=8, alpha=16, dropout 0.1``."""
        return f"r={self.r}, alpha={self.alpha:g}, dropout {self.dropout:g}"

    @property
    def description(self) -> str:
        if self.use_dora:
            return f"DoRA (peft use_dora=True): LoRA {self.summary} plus a magnitude vector per weight"
        return f"LoRA (peft): {self.summary} on the default target modules"

    def peft_options(self) -> dict[str, Any]:
        return dict(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, use_dora=self.use_dora)


LORA = LoraSettings()


def lora_model(model, task, lora: LoraSettings = LORA):
    """``model`` wrapped by peft LoRA with ``lora``'s settings on the family's LoRA targets."""
    from peft import LoraConfig

    from meft.families import family_of

    return peft_model(model, task, LoraConfig, family_of(model).profiling.lora_targets, **lora.peft_options())


@register("lora", LORA.description, trains=TRAINS, settings=LORA, layers_alike=True)
def apply(model, backbone, task):
    return lora_model(model, task)
