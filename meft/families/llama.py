"""Llama 2 and 3 (pre-LayerNorm decoders with RMSNorm, rotary positions, grouped-query attention);
Qwen2 and Mistral have the same layers (qwen2.py, mistral.py use this kind).

    LlamaDecoderLayer (Qwen2DecoderLayer, MistralDecoderLayer have the same blocks):
        attention    = h + self_attn(input_layernorm(h), position_embeddings=(cos, sin), attention_mask=causal mask)
        feed-forward = h + mlp(post_attention_layernorm(h))        mlp = down(act(gate(x)) * up(x))

The adapter reads what the MLP reads (post_attention_layernorm(h)) and its output is added to the
MLP's, before the residual add, as in opt.py. These layers have no dropout but the attention's
(``attention_dropout``). The model's final RMSNorm (``norm``) stays outside the layers, untouched.

What the decoder loop passes to each layer (transformers 5.x) and how it reaches the blocks:
- ``position_embeddings``, the (cos, sin) pair the model's rotary embedding computes once for all
  layers, is split into two call entries by ``bind``, so that both are tensor inputs of the
  reversible Function (kept for the recomputation like any mask), and paired again for self_attn;
- ``attention_mask`` is the 4-d causal (or sliding-window) mask, or None where the attention kernel
  applies causality itself (sdpa without padding); grouped-query attention (num_key_value_heads <
  num_attention_heads) happens inside self_attn, which repeats the key/value heads;
- ``cache`` and ``use_cache`` are dropped by ``LayerKind.without_cache`` for every training
  pass; in eval every layer's self_attn runs exactly once per forward, so each layer's cache slot
  gets one update per forward, as in the original model, and ``generate`` decodes incrementally.

Qwen2 can give its layers different masks (``config.layer_types``, sliding-window layers above
``max_window_layers``); the converted stack is called once, with the lowest layer's mask, so such
configs are refused (``_check``).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from meft.errors import MEFTError
from meft.families.base import Call, ConfigFields, Family, LayerKind, Profiling, ReversibleSites, Site, rest

_COS, _SIN = "rope_cos", "rope_sin"


class LlamaKind(LayerKind):
    def bind(self, layer: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, Call]:
        hidden, call = super().bind(layer, args, kwargs)
        cos_sin = call.pop("position_embeddings", None)
        if cos_sin is not None:  # a tuple would pass the Function as a constant, not as its two tensors
            call[_COS], call[_SIN] = cos_sin  # (1 or B, T, head_dim) each
        return hidden, call

    def attention(self, layer: nn.Module, h: torch.Tensor, call: Call) -> torch.Tensor:
        rope = (call[_COS], call[_SIN]) if _COS in call else None
        y, _ = layer.self_attn(
            hidden_states=layer.input_layernorm(h),
            position_embeddings=rope,
            attention_mask=call.get("attention_mask"),
            cache=call.get("cache"),
            **rest(call, _COS, _SIN, "attention_mask", "cache"),  # position_ids, use_cache, kernel kwargs
        )
        return h + y

    def feed_forward(self, layer: nn.Module, h: torch.Tensor, call: Call, adapter: nn.Module) -> torch.Tensor:
        x = layer.post_attention_layernorm(h)  # (B, T, H)
        return h + layer.mlp(x) + adapter(x)


def decoder_sites(model: nn.Module, decoder_class: type) -> list[Site]:
    return [Site("decoder", m, "layers", LlamaKind()) for m in model.modules() if isinstance(m, decoder_class)]


def _find_sites(model: nn.Module) -> list[Site]:
    from transformers.models.llama.modeling_llama import LlamaModel

    return decoder_sites(model, LlamaModel)


def check(config) -> None:
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    if not kv_heads or heads % kv_heads:  # HF builds such a model and fails in its first forward
        raise MEFTError(
            f"num_key_value_heads={kv_heads} does not divide num_attention_heads={heads}; grouped-query attention "
            f"shares each key/value head among heads / num_key_value_heads query heads: pass a divisor of {heads}"
        )
    types = list(getattr(config, "layer_types", None) or [])[: config.num_hidden_layers]
    if len(set(types)) > 1:
        raise MEFTError(
            f"layer_types mixes {', '.join(sorted(set(types)))}; a MEFT stack calls all layers with one attention "
            "mask: use one attention type for every layer (e.g. use_sliding_window=False)"
        )


#: what the Llama-style decoders share: their task heads (MEFT keeps them trainable), config fields ...
DECODER_HEADS = ("score", "qa_outputs")
DECODER_FIELDS = ConfigFields(kv_heads="num_key_value_heads")
#: ... and, for memprof, tasks, LoRA and (IA)3 targets (peft's), adapter sites
DECODER_PROFILING = Profiling(
    tasks=("causal-lm", "classification"),
    lora_targets=("q_proj", "v_proj"),
    adapter_projections=("self_attn.o_proj", "mlp.down_proj"),
    ia3_targets=("k_proj", "v_proj", "down_proj"),
    ia3_feedforward=("down_proj",),
    bias_terms=False,  # no bias in attention, MLP or RMSNorm
)

_LLAMA3_ROPE = dict(
    rope_type="llama3", low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)


def _llama3(h: int, n: int, heads: int, ffn: int, *, tied: bool, rope_factor: float, head_dim: int) -> dict:
    """A Llama 3 config as published (meta-llama/Llama-3.x-yB config.json)."""
    return dict(
        model_type="llama",
        hidden_size=h,
        num_hidden_layers=n,
        num_attention_heads=heads,
        num_key_value_heads=8,
        head_dim=head_dim,
        intermediate_size=ffn,
        vocab_size=128256,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        tie_word_embeddings=tied,
        rope_theta=500000.0,
        rope_scaling={**_LLAMA3_ROPE, "factor": rope_factor},
        bos_token_id=128000,
        eos_token_id=128001,
    )


FAMILY = Family(
    name="llama",
    meft=ReversibleSites(find_sites=_find_sites, check=check, heads=DECODER_HEADS),
    profiling=replace(
        DECODER_PROFILING,
        backbones={
            "llama-3.2-1b": _llama3(2048, 16, 32, 8192, tied=True, rope_factor=32.0, head_dim=64),
            "llama-3.2-3b": _llama3(3072, 28, 24, 8192, tied=True, rope_factor=32.0, head_dim=128),
            "llama-3.1-8b": _llama3(4096, 32, 32, 14336, tied=False, rope_factor=8.0, head_dim=128),
        },
    ),
    fields=DECODER_FIELDS,
)
