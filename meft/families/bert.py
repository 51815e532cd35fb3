"""BERT and RoBERTa (post-LayerNorm encoders; RobertaLayer is BertLayer under another name).

    BertLayer: attention = BertAttention (self-attention, dense, dropout, LayerNorm(. + h))
               feed-forward = BertIntermediate (dense, act) -> BertOutput (dense, dropout, LayerNorm(. + h))

The adapter reads the feed-forward input h and its output is added to BertOutput's dropout output,
before the residual add and LayerNorm, as in the authors' released BERT code.
"""

from __future__ import annotations

import torch
from torch import nn

from meft.errors import MEFTError
from meft.families import Call, Family, LayerKind, Site, rest


class BertKind(LayerKind):
    def attention(self, layer: nn.Module, h: torch.Tensor, call: Call) -> torch.Tensor:
        extra = rest(call, "attention_mask", "encoder_hidden_states", "encoder_attention_mask", "cache")
        out, _ = layer.attention(h, call.get("attention_mask"), cache=call.get("cache"), **extra)
        return out

    def feed_forward(self, layer: nn.Module, h: torch.Tensor, call: Call, adapter: nn.Module) -> torch.Tensor:
        out = layer.output
        y = out.dropout(out.dense(layer.intermediate(h)))  # (B, T, H)
        return out.LayerNorm(y + adapter(h) + h)


def _find_sites(model: nn.Module) -> list[Site]:
    from transformers.models.bert.modeling_bert import BertEncoder
    from transformers.models.roberta.modeling_roberta import RobertaEncoder

    encoders = (m for m in model.modules() if isinstance(m, (BertEncoder, RobertaEncoder)))
    return [Site("encoder", m, "layer", BertKind()) for m in encoders]


def _check(config) -> None:
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise MEFTError(
            f"{config.model_type} configured as a decoder (is_decoder={config.is_decoder}, add_cross_attention="
            f"{config.add_cross_attention}) is not supported; MEFT converts BERT/RoBERTa encoders: set both to False"
        )


FAMILY = Family(
    name="bert",
    find_sites=_find_sites,
    check=_check,
    hidden_size=lambda c: c.hidden_size,
    activation=lambda c: c.hidden_act,
    heads=("classifier", "qa_outputs"),
)
