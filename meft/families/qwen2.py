"""Qwen2 and Qwen2.5: Llama's layers (see llama.py) with biases on the query, key and value projections;
layers above ``max_window_layers`` may use sliding-window attention (refused by ``llama.check`` when
the layers' attention types differ)."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from meft.families.base import Family, ReversibleSites, Site
from meft.families.llama import DECODER_FIELDS, DECODER_HEADS, DECODER_PROFILING, check, decoder_sites


def _find_sites(model: nn.Module) -> list[Site]:
    from transformers.models.qwen2.modeling_qwen2 import Qwen2Model

    return decoder_sites(model, Qwen2Model)


def _qwen25(h: int, n: int, heads: int, kv_heads: int, ffn: int, *, vocab: int, positions: int, tied: bool) -> dict:
    """A Qwen2.5 base-model config as published (Qwen/Qwen2.5-xB config.json): full attention in every layer."""
    return dict(
        model_type="qwen2",
        hidden_size=h,
        num_hidden_layers=n,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=ffn,
        vocab_size=vocab,
        max_position_embeddings=positions,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        tie_word_embeddings=tied,
        rope_theta=1000000.0,
        use_sliding_window=False,
        sliding_window=positions,
        max_window_layers=n,
        bos_token_id=151643,
        eos_token_id=151643,
    )


FAMILY = Family(
    name="qwen2",
    meft=ReversibleSites(find_sites=_find_sites, check=check, heads=DECODER_HEADS),
    profiling=replace(
        DECODER_PROFILING,
        backbones={
            "qwen2.5-0.5b": _qwen25(896, 24, 14, 2, 4864, vocab=151936, positions=32768, tied=True),
            "qwen2.5-7b": _qwen25(3584, 28, 28, 4, 18944, vocab=152064, positions=131072, tied=False),
        },
        # Qwen2's query, key and value projections have biases; peft's (IA)3 targets differ from Llama's
        bias_terms=True,
        ia3_targets=("q_proj", "v_proj", "down_proj"),
    ),
    fields=DECODER_FIELDS,
)
