"""OPT (decoder-only; pre-LayerNorm, except opt-350m which is post-LayerNorm and projects 512 <-> 1024).

    OPTDecoderLayer: attention    = h + dropout(self_attn(LN(h)))       (post-LN: LN(h + dropout(self_attn(h))))
                     feed-forward = h + dropout(fc2(act(fc1(LN(h)))))   (post-LN: LN(h + dropout(fc2(act(fc1(h))))))

The adapter reads what fc1 reads (LN(h) in pre-LN layers) and its output is added to the
feed-forward output before the residual add. The decoder's final LayerNorm and project_in/out stay
outside the layers, in OPTDecoder, and are untouched by the conversion.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from meft.errors import MEFTError
from meft.families import Call, Family, LayerKind, Site, rest


class OPTKind(LayerKind):
    def attention(self, layer: nn.Module, h: torch.Tensor, call: Call) -> torch.Tensor:
        x = layer.self_attn_layer_norm(h) if layer.do_layer_norm_before else h
        y, _ = layer.self_attn(
            hidden_states=x,
            cache=call.get("cache"),
            position_ids=call.get("position_ids"),
            attention_mask=call.get("attention_mask"),
            **rest(call, "attention_mask", "cache", "use_cache", "position_ids"),
        )
        out = h + F.dropout(y, p=layer.dropout, training=layer.training)
        return out if layer.do_layer_norm_before else layer.self_attn_layer_norm(out)

    def feed_forward(self, layer: nn.Module, h: torch.Tensor, call: Call, adapter: nn.Module) -> torch.Tensor:
        x = layer.final_layer_norm(h) if layer.do_layer_norm_before else h
        y = layer.fc2(layer.activation_fn(layer.fc1(x)))  # (B, T, H)
        out = h + F.dropout(y, p=layer.dropout, training=layer.training) + adapter(x)
        return out if layer.do_layer_norm_before else layer.final_layer_norm(out)


def _find_sites(model: nn.Module) -> list[Site]:
    from transformers.models.opt.modeling_opt import OPTDecoder

    return [Site("decoder", m, "layers", OPTKind()) for m in model.modules() if isinstance(m, OPTDecoder)]


def _check(config) -> None:
    if getattr(config, "layerdrop", 0.0) > 0:
        raise MEFTError(
            f"layerdrop={config.layerdrop} would drop the whole reversible stack at once; "
            "MEFT needs every layer: set config.layerdrop = 0.0"
        )


FAMILY = Family(
    name="opt",
    find_sites=_find_sites,
    check=_check,
    hidden_size=lambda c: c.hidden_size,
    activation=lambda c: c.activation_function,
    heads=("score", "qa_outputs"),
)
