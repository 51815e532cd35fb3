"""Prefix tuning (Li and Liang, ACL 2021, "Prefix-Tuning: Optimizing Continuous Prompts for
Generation"): every attention layer of the top stack attends to ``PREFIX.num_virtual_tokens`` learned
key and value vectors in front of the sequence; the backbone is frozen, the prefixes and the task head
train.

As HF peft's ``PrefixTuningConfig`` (whose defaults these are: no reparameterisation MLP,
``prefix_projection=False``; prefixes initialised N(0, 1) as peft's embedding): the prefixes go in
as transformers' key/value cache, with the attention mask extended over them. peft itself refuses
sequence classification with this transformers (its check looks for ``past_key_values``, which
transformers 5 renamed ``cache``), so the prefixes are passed here by a forward pre-hook. Unlike
peft, the sequence keeps its positions 0..S-1 (explicit ``position_ids`` where the model takes them):
keys and values of the prefix have no position, so a 512-token sequence still fits BERT's 512
positions. An encoder-decoder's prefixes sit in its decoder's self-attention (the cache holds no
encoder keys). ``PrefixSettings``' default number of virtual tokens is peft's examples'; Li and Liang
used 10 (table-to-text) and 200 (summarisation).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from memprof.errors import MemprofError
from memprof.methods import settings
from memprof.methods.registry import freeze, register, unfreeze_head


@dataclass(frozen=True)
class PrefixSettings:
    """Prefix tuning's one hyper-parameter, as peft's ``PrefixTuningConfig`` names it."""

    num_virtual_tokens: int = 20

    def __post_init__(self) -> None:
        settings.check_count("prefix", "num_virtual_tokens", self.num_virtual_tokens, 20)

    @property
    def description(self) -> str:
        return f"prefix tuning: {self.num_virtual_tokens} learned key/value vectors per attention layer"

    @property
    def trains(self) -> str:
        n = self.num_virtual_tokens
        return f"{n} key and value vectors per attention layer of the top stack, and the task head"


PREFIX = PrefixSettings()


class Prefix(nn.Module):
    """Learned keys and values: ``weight`` (layers, 2, kv_heads, tokens, head_dim)."""

    def __init__(self, layers: int, kv_heads: int, tokens: int, head_dim: int, like: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(
            torch.empty(layers, 2, kv_heads, tokens, head_dim, device=like.device, dtype=like.dtype)
        )
        if like.device.type != "meta":
            nn.init.normal_(self.weight)

    @property
    def tokens(self) -> int:
        return self.weight.shape[3]

    def cache(self, config, batch: int):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        cache = DynamicCache(config=config)
        for i, kv in enumerate(self.weight):
            keys, values = (t.unsqueeze(0).expand(batch, *t.shape) for t in kv)  # (B, kv_heads, P, head_dim)
            cache.update(keys, values, i)
        return EncoderDecoderCache(cache, DynamicCache()) if config.is_encoder_decoder else cache


def _shape(model) -> tuple[int, int, int]:
    """(layers, key/value heads, head width) of the top stack's attention, from the config."""
    from meft.families import family_of

    family, config = family_of(model), model.config
    heads = int(getattr(config, family.fields.heads))
    kv_heads = int(getattr(config, family.fields.kv_heads or family.fields.heads) or heads)
    head_dim = getattr(config, "head_dim", None) or family.hidden_size(config) // heads
    return len(family.meft.find_sites(model)[-1].layers), kv_heads, int(head_dim)


def _check_takes_cache(model) -> None:
    params = inspect.signature(type(model).forward).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "cache" not in params and not takes_kwargs:
        raise MemprofError(
            f"method prefix passes its prefixes as a key/value cache and {type(model).__name__} "
            "takes none: use a task model that takes a cache"
        )


def _inject(prefix: Prefix, reserved: int, takes_positions: bool):
    """The forward pre-hook: the prefixes as the cache, the mask extended over them, positions from 0."""

    def hook(model, args, kwargs):
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs["inputs_embeds"]
        batch, seq = ids.shape[:2]
        mask_name = "decoder_attention_mask" if model.config.is_encoder_decoder else "attention_mask"
        mask = kwargs.get(mask_name)
        if mask is not None:
            ones = torch.ones(batch, prefix.tokens, dtype=mask.dtype, device=mask.device)
            kwargs[mask_name] = torch.cat([ones, mask], dim=1)
        elif not model.config.is_encoder_decoder:
            kwargs[mask_name] = torch.ones(batch, prefix.tokens + seq, dtype=torch.long, device=ids.device)
        if takes_positions and kwargs.get("position_ids") is None:
            kwargs["position_ids"] = (torch.arange(seq, device=ids.device) + reserved).expand(batch, seq)
        kwargs["cache"] = prefix.cache(model.config, batch)
        return args, kwargs

    return hook


@register("prefix", PREFIX.description, trains=PREFIX.trains, settings=PREFIX, layers_alike=True)
def apply(model, backbone, task):
    from meft.families import family_of

    _check_takes_cache(model)
    freeze(model)
    layers, kv_heads, head_dim = _shape(model)
    like = next(model.parameters())
    model.prefix_tuning = Prefix(layers, kv_heads, PREFIX.num_virtual_tokens, head_dim, like)
    reserved = family_of(model).profiling.reserved_positions(model.config.to_dict())
    takes_positions = "position_ids" in inspect.signature(type(model).forward).parameters
    model.register_forward_pre_hook(_inject(model.prefix_tuning, reserved, takes_positions), with_kwargs=True)
    unfreeze_head(model)
    return model
