"""Mistral: Llama's layers (see llama.py), every layer with sliding-window attention (a 4096-token
window in Mistral-7B-v0.1), so one mask serves the whole reversible stack."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from meft.families.base import Family, ReversibleSites, Site
from meft.families.llama import DECODER_FIELDS, DECODER_HEADS, DECODER_PROFILING, check, decoder_sites


def _find_sites(model: nn.Module) -> list[Site]:
    from transformers.models.mistral.modeling_mistral import MistralModel

    return decoder_sites(model, MistralModel)


FAMILY = Family(
    name="mistral",
    meft=ReversibleSites(find_sites=_find_sites, check=check, heads=DECODER_HEADS),
    profiling=replace(
        DECODER_PROFILING,
        backbones={
            # mistralai/Mistral-7B-v0.1 config.json
            "mistral-7b": dict(
                model_type="mistral",
                hidden_size=4096,
                num_hidden_layers=32,
                num_attention_heads=32,
                num_key_value_heads=8,
                intermediate_size=14336,
                vocab_size=32000,
                max_position_embeddings=32768,
                sliding_window=4096,
                rms_norm_eps=1e-5,
                hidden_act="silu",
                rope_theta=10000.0,
                tie_word_embeddings=False,
                bos_token_id=1,
                eos_token_id=2,
            ),
        },
    ),
    fields=DECODER_FIELDS,
)
