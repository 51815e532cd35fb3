"""GPT-2 (pre-LayerNorm decoder; Conv1D projections, learned positions added before the layers).

    GPT2Block: attention    = h + attn(ln_1(h))    attn ends in c_proj, resid_dropout
               feed-forward = h + mlp(ln_2(h))     mlp = dropout(c_proj(act(c_fc(x))))

The adapter reads what the MLP reads (ln_2(h)) and its output is added to the MLP's (after its
dropout) before the residual add, as in opt.py. The loop in GPT2Model passes the cache, the causal
mask and the encoder states positionally; ``LayerKind.bind`` names them by GPT2Block's signature.
The cache reaches attn as in GPT2Block (and is dropped for a training pass by
``LayerKind.without_cache``); in eval each layer's attn runs once per forward, so ``generate``
decodes with the KV cache. Embedding dropout (``drop``) and the final ``ln_f`` stay outside the
layers, untouched.

Blocks with cross-attention (``add_cross_attention``, GPT-2 as the decoder of an encoder-decoder)
are refused (``_check``).
"""

from __future__ import annotations

import torch
from torch import nn

from meft.errors import MEFTError
from meft.families.base import Call, ConfigFields, Family, LayerKind, Profiling, ReversibleSites, Site, rest

#: GPT2Block's own arguments that its self-attention does not take
_BLOCK_ONLY = ("cache", "attention_mask", "encoder_hidden_states", "encoder_attention_mask")


class GPT2Kind(LayerKind):
    def attention(self, layer: nn.Module, h: torch.Tensor, call: Call) -> torch.Tensor:
        y, _ = layer.attn(
            layer.ln_1(h),
            cache=call.get("cache"),
            attention_mask=call.get("attention_mask"),
            **rest(call, *_BLOCK_ONLY),  # use_cache, position_ids, kernel kwargs, as GPT2Block passes them
        )
        return h + y

    def feed_forward(self, layer: nn.Module, h: torch.Tensor, call: Call, adapter: nn.Module) -> torch.Tensor:
        x = layer.ln_2(h)  # (B, T, H)
        return h + layer.mlp(x) + adapter(x)


def _find_sites(model: nn.Module) -> list[Site]:
    from transformers.models.gpt2.modeling_gpt2 import GPT2Model

    return [Site("decoder", m, "h", GPT2Kind()) for m in model.modules() if isinstance(m, GPT2Model)]


def _check(config) -> None:
    if getattr(config, "add_cross_attention", False):
        raise MEFTError(
            "gpt2 with add_cross_attention=True (the decoder of an encoder-decoder) is not supported; MEFT converts "
            "GPT-2 decoder-only models: set add_cross_attention=False"
        )


def _gpt2(h: int, n: int, heads: int) -> dict:
    """A GPT-2 config as published (openai-community/gpt2*, config.json)."""
    return dict(
        model_type="gpt2",
        n_embd=h,
        n_layer=n,
        n_head=heads,
        n_positions=1024,
        n_ctx=1024,
        vocab_size=50257,
        activation_function="gelu_new",
        resid_pdrop=0.1,
        embd_pdrop=0.1,
        attn_pdrop=0.1,
        layer_norm_epsilon=1e-5,
        bos_token_id=50256,
        eos_token_id=50256,
    )


FAMILY = Family(
    name="gpt2",
    meft=ReversibleSites(find_sites=_find_sites, check=_check, heads=("score", "qa_outputs")),
    profiling=Profiling(
        tasks=("causal-lm", "classification"),
        lora_targets=("c_attn",),
        adapter_projections=("attn.c_proj", "mlp.c_proj"),
        ia3_targets=("c_attn", "mlp.c_proj"),
        ia3_feedforward=("mlp.c_proj",),
        backbones={"gpt2": _gpt2(768, 12, 12), "gpt2-medium": _gpt2(1024, 24, 16)},
    ),
    fields=ConfigFields(
        hidden="n_embd", heads="n_head", layers=("n_layer",), positions="n_positions", activation="activation_function"
    ),
)
