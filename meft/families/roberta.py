"""RoBERTa: BERT's layers (RobertaLayer is BertLayer under another name, see bert.py); its position
embeddings reserve the first padding_idx + 1 slots."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from meft.families.base import Family, ReversibleSites, Site
from meft.families.bert import ENCODER_HEADS, ENCODER_PROFILING, check, encoder_sites

_COMMON = dict(
    vocab_size=50265,
    max_position_embeddings=514,
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)


def _find_sites(model: nn.Module) -> list[Site]:
    from transformers.models.roberta.modeling_roberta import RobertaEncoder

    return encoder_sites(model, RobertaEncoder)


def _roberta(h: int, n: int, heads: int, ffn: int) -> dict:
    return dict(
        model_type="roberta",
        hidden_size=h,
        num_hidden_layers=n,
        num_attention_heads=heads,
        intermediate_size=ffn,
        **_COMMON,
    )


FAMILY = Family(
    name="roberta",
    meft=ReversibleSites(find_sites=_find_sites, check=check, heads=ENCODER_HEADS),
    profiling=replace(
        ENCODER_PROFILING,
        backbones={"roberta-base": _roberta(768, 12, 12, 3072), "roberta-large": _roberta(1024, 24, 16, 4096)},
        reserved_positions=lambda config: int(config.get("pad_token_id", 1)) + 1,
    ),
)
