"""BART (post-LayerNorm encoder-decoder).

    BartEncoderLayer: attention = self_attn, dropout, self_attn_layer_norm(h + .)
    BartDecoderLayer: attention = the self-attention block, then (given encoder_hidden_states) the
                      cross-attention block encoder_attn, dropout, encoder_attn_layer_norm(h + .)
    both:             feed-forward = fc1, act, dropout, fc2, dropout, final_layer_norm(h + .)

encoder_hidden_states reach the decoder's layers through ``call``; the reversible Function takes
every tensor of ``call`` as an input, so the cross-attention gradients flow into the encoder.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from meft.errors import MEFTError
from meft.families.base import Call, ConfigFields, Family, LayerKind, Profiling, ReversibleSites, Site, rest


def _residual_block(layer: nn.Module, h: torch.Tensor, y: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    return norm(h + F.dropout(y, p=layer.dropout, training=layer.training))


class BartEncoderKind(LayerKind):
    def attention(self, layer: nn.Module, h: torch.Tensor, call: Call) -> torch.Tensor:
        y, _ = layer.self_attn(h, attention_mask=call.get("attention_mask"), **rest(call, "attention_mask"))
        return _residual_block(layer, h, y, layer.self_attn_layer_norm)

    def feed_forward(self, layer: nn.Module, h: torch.Tensor, call: Call, adapter: nn.Module) -> torch.Tensor:
        y = layer.activation_fn(layer.fc1(h))  # (B, T, ffn)
        y = F.dropout(y, p=layer.activation_dropout, training=layer.training)
        y = F.dropout(layer.fc2(y), p=layer.dropout, training=layer.training) + adapter(h)
        out = layer.final_layer_norm(h + y)
        if out.dtype == torch.float16:  # BartEncoderLayer clamps only when non-finite; clamping always needs no branch
            bound = torch.finfo(out.dtype).max - 1000
            out = torch.clamp(out, min=-bound, max=bound)
        return out


class BartDecoderKind(BartEncoderKind):
    _NAMED = ("attention_mask", "encoder_hidden_states", "encoder_attention_mask", "cache", "use_cache")

    def attention(self, layer: nn.Module, h: torch.Tensor, call: Call) -> torch.Tensor:
        extra = rest(call, *self._NAMED)
        cache = call.get("cache")
        y, _ = layer.self_attn(h, cache=cache, attention_mask=call.get("attention_mask"), **extra)
        h = _residual_block(layer, h, y, layer.self_attn_layer_norm)
        enc = call.get("encoder_hidden_states")
        if enc is not None:
            y, _ = layer.encoder_attn(
                h, key_value_states=enc, attention_mask=call.get("encoder_attention_mask"), cache=cache, **extra
            )
            h = _residual_block(layer, h, y, layer.encoder_attn_layer_norm)
        return h


def _find_sites(model: nn.Module) -> list[Site]:
    from transformers.models.bart.modeling_bart import BartDecoder, BartEncoder

    sites = []
    for m in model.modules():
        if isinstance(m, BartEncoder):
            sites.append(Site("encoder", m, "layers", BartEncoderKind()))
        elif isinstance(m, BartDecoder):
            sites.append(Site("decoder", m, "layers", BartDecoderKind()))
    return sites


def _check(config) -> None:
    for name in ("encoder_layerdrop", "decoder_layerdrop"):
        if getattr(config, name, 0.0) > 0:
            raise MEFTError(
                f"{name}={getattr(config, name)} would drop the whole reversible stack at once; "
                f"MEFT needs every layer: set config.{name} = 0.0"
            )


_COMMON = dict(
    vocab_size=50265,
    max_position_embeddings=1024,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
    decoder_start_token_id=2,
    forced_eos_token_id=2,
)


def _bart(d: int, n: int, heads: int, ffn: int) -> dict:
    return dict(
        model_type="bart",
        d_model=d,
        encoder_layers=n,
        decoder_layers=n,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        **_COMMON,
    )


FAMILY = Family(
    name="bart",
    meft=ReversibleSites(find_sites=_find_sites, check=_check, heads=("classification_head", "qa_outputs")),
    profiling=Profiling(
        tasks=("classification", "seq2seq"),
        lora_targets=("q_proj", "v_proj"),
        adapter_projections=("self_attn.out_proj", "fc2"),
        ia3_targets=("q_proj", "v_proj", "fc2"),
        ia3_feedforward=("fc2",),
        backbones={"bart-base": _bart(768, 6, 12, 3072), "bart-large": _bart(1024, 12, 16, 4096)},
        eos_last=True,  # BartForSequenceClassification reads the hidden state at the last </s> of each row
    ),
    fields=ConfigFields(
        hidden="d_model",
        heads="encoder_attention_heads",
        layers=("encoder_layers", "decoder_layers"),
        activation="activation_function",
    ),
)
