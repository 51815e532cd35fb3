"""BERT (post-LayerNorm encoder; RoBERTa's layers are the same, see roberta.py).

    BertLayer: attention = BertAttention (self-attention, dense, dropout, LayerNorm(. + h))
               feed-forward = BertIntermediate (dense, act) -> BertOutput (dense, dropout, LayerNorm(. + h))

The adapter reads the feed-forward input h and its output is added to BertOutput's dropout output,
before the residual add and LayerNorm, as in the authors' released BERT code.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from meft.errors import MEFTError
from meft.families.base import Call, Family, LayerKind, Profiling, ReversibleSites, Site, rest


class BertKind(LayerKind):
    def attention(self, layer: nn.Module, h: torch.Tensor, call: Call) -> torch.Tensor:
        extra = rest(call, "attention_mask", "encoder_hidden_states", "encoder_attention_mask", "cache")
        out, _ = layer.attention(h, call.get("attention_mask"), cache=call.get("cache"), **extra)
        return out

    def feed_forward(self, layer: nn.Module, h: torch.Tensor, call: Call, adapter: nn.Module) -> torch.Tensor:
        out = layer.output
        y = out.dropout(out.dense(layer.intermediate(h)))  # (B, T, H)
        return out.LayerNorm(y + adapter(h) + h)


def encoder_sites(model: nn.Module, encoder_class: type) -> list[Site]:
    return [Site("encoder", m, "layer", BertKind()) for m in model.modules() if isinstance(m, encoder_class)]


def _find_sites(model: nn.Module) -> list[Site]:
    from transformers.models.bert.modeling_bert import BertEncoder

    return encoder_sites(model, BertEncoder)


def check(config) -> None:
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise MEFTError(
            f"{config.model_type} configured as a decoder (is_decoder={config.is_decoder}, add_cross_attention="
            f"{config.add_cross_attention}) is not supported; MEFT converts BERT/RoBERTa encoders: set both to False"
        )


#: the task heads of BERT-style encoders (MEFT keeps them trainable)
ENCODER_HEADS = ("classifier", "qa_outputs")
#: what BERT-style encoders share for memprof: tasks, LoRA and (IA)3 targets (peft's), adapter sites
ENCODER_PROFILING = Profiling(
    tasks=("classification",),
    lora_targets=("query", "value"),
    adapter_projections=("attention.output.dense", "output.dense"),
    ia3_targets=("key", "value", "output.dense"),
    ia3_feedforward=("output.dense",),
)


def _bert(h: int, n: int, heads: int, ffn: int) -> dict:
    return dict(
        model_type="bert",
        hidden_size=h,
        num_hidden_layers=n,
        num_attention_heads=heads,
        intermediate_size=ffn,
        vocab_size=30522,
        max_position_embeddings=512,
        type_vocab_size=2,
    )


FAMILY = Family(
    name="bert",
    meft=ReversibleSites(find_sites=_find_sites, check=check, heads=ENCODER_HEADS),
    profiling=replace(
        ENCODER_PROFILING, backbones={"bert-base": _bert(768, 12, 12, 3072), "bert-large": _bert(1024, 24, 16, 4096)}
    ),
)
