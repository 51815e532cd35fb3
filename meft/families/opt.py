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
from meft.families.base import Call, ConfigFields, Family, LayerKind, Profiling, ReversibleSites, Site, rest


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


_COMMON = dict(
    vocab_size=50272,
    max_position_embeddings=2048,
    pad_token_id=1,
    bos_token_id=2,
    eos_token_id=2,
    enable_bias=True,
    do_layer_norm_before=True,
)


def _opt(h: int, n: int, heads: int, ffn: int, **extra) -> dict:
    return dict(
        model_type="opt",
        hidden_size=h,
        num_hidden_layers=n,
        num_attention_heads=heads,
        ffn_dim=ffn,
        **{**_COMMON, "word_embed_proj_dim": h, **extra},
    )


FAMILY = Family(
    name="opt",
    meft=ReversibleSites(find_sites=_find_sites, check=_check, heads=("score", "qa_outputs")),
    profiling=Profiling(
        tasks=("causal-lm", "classification"),
        lora_targets=("q_proj", "v_proj"),
        adapter_projections=("self_attn.out_proj", "fc2"),
        ia3_targets=("q_proj", "k_proj", "fc2"),
        ia3_feedforward=("fc2",),
        backbones={
            "opt-125m": _opt(768, 12, 12, 3072),
            # opt-350m projects embeddings 512 -> 1024 and puts LayerNorm after each block.
            "opt-350m": _opt(1024, 24, 16, 4096, word_embed_proj_dim=512, do_layer_norm_before=False),
            "opt-1.3b": _opt(2048, 24, 32, 8192),
            "opt-2.7b": _opt(2560, 32, 32, 10240),
            "opt-6.7b": _opt(4096, 32, 32, 16384),
        },
    ),
    fields=ConfigFields(activation="activation_function"),
)
