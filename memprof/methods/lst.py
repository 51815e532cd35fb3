"""Ladder side-tuning (Sung, Cho and Bansal, NeurIPS 2022, "LST: Ladder Side-Tuning for Parameter
and Memory Efficient Transfer Learning"): a small side network of width hidden / r (the paper's
reduction factor r = 8; ``LADDER`` holds it and the values below) beside the frozen backbone, fed
by the backbone's layer outputs. The backbone runs without building a graph (each of its layers
under ``torch.no_grad``), so it saves nothing for backward; only the side network does.

Side layer i reads mu_i * down_i(h_i) + (1 - mu_i) * s_(i-1), where h_i is the output of backbone
layer i, down_i a linear downsampler, s_(i-1) the side network's previous output (layer 0 reads
down_0(h_0)) and mu_i = sigmoid(alpha_i / T) a gate with alpha_i starting at 0 and temperature T = 0.1
(the paper's). A side layer is a post-LN transformer layer of width hidden / r, feed-forward 4x that, the
backbone's head count (one head when it does not divide the width), GELU, dropout 0.1, attention
through ``scaled_dot_product_attention`` with no mask when the batch has no padding (so the fused
kernels run and nothing of size S x S is kept; ``nn.TransformerEncoderLayer`` would expand the
padding mask to (B * heads, S, S) and keep it). The paper initialises its side layers from the
backbone's weights, pruned to the side width, which needs each family's layer code; these start
from random weights and are the same for every family. The top backbone layer's output becomes
h_top + up(s_top) (up: linear back to hidden), so what sits above it (final norm, pooler, head)
reads the ladder. The ladder runs over the top stack (an encoder-decoder's decoder, whose layers read the encoder),
causal for the generation tasks, with the padding mask where the batch gives one of its length.
Trainable: the side network (downsamplers, gates, side layers, upsampler) and the task head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from memprof.methods import settings
from memprof.methods.registry import freeze, register, unfreeze_head

GENERATION_TASKS = ("causal-lm", "seq2seq")


@dataclass(frozen=True)
class LadderSettings:
    """The side network's shape: width hidden / ``reduction_factor``, feed-forward ``ffn_factor`` x
    that, ``dropout`` in its layers, gates sigmoid(alpha / ``gate_temperature``) (the paper's values)."""

    reduction_factor: int = 8
    ffn_factor: int = 4
    dropout: float = 0.1
    gate_temperature: float = 0.1

    def __post_init__(self) -> None:
        settings.check_count("lst", "reduction_factor", self.reduction_factor, 8)
        settings.check_count("lst", "ffn_factor", self.ffn_factor, 4)
        settings.check_probability("lst", "dropout", self.dropout, 0.1)
        settings.check_positive("lst", "gate_temperature", self.gate_temperature, 0.1)

    @property
    def description(self) -> str:
        return (
            f"ladder side-tuning: a hidden/{self.reduction_factor} side network fed by the frozen backbone's "
            "layers, run without a graph"
        )


LADDER = LadderSettings()


class SideLayer(nn.Module):
    """x = LN(x + attention(x)); x = LN(x + fc2(gelu(fc1(x)))), with dropout (BERT's layer, narrow)."""

    def __init__(self, width: int, heads: int, ladder: LadderSettings, **kw):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, **kw)
        self.out = nn.Linear(width, width, **kw)
        self.norm1 = nn.LayerNorm(width, **kw)
        self.fc1 = nn.Linear(width, ladder.ffn_factor * width, **kw)
        self.fc2 = nn.Linear(ladder.ffn_factor * width, width, **kw)
        self.norm2 = nn.LayerNorm(width, **kw)
        self.dropout = nn.Dropout(ladder.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.qkv(x).view(batch, seq, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout.p if self.training else 0.0
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal and mask is None
        )  # (B, heads, S, head width)
        x = self.norm1(x + self.dropout(self.out(a.transpose(1, 2).reshape(batch, seq, width))))
        return self.norm2(x + self.dropout(self.fc2(F.gelu(self.fc1(x)))))


class Ladder(nn.Module):
    """The side network; ``taps`` collects the backbone's layer outputs during a forward."""

    def __init__(
        self, hidden: int, depth: int, heads: int, causal: bool, like: torch.Tensor, ladder: LadderSettings = LADDER
    ):
        super().__init__()
        width = max(1, hidden // ladder.reduction_factor)
        self.gate_temperature = ladder.gate_temperature
        heads = heads if width % heads == 0 else 1
        kw = dict(device=like.device, dtype=like.dtype)
        self.down = nn.ModuleList(nn.Linear(hidden, width, **kw) for _ in range(depth))
        self.gates = nn.Parameter(torch.zeros(depth - 1, **kw)) if depth > 1 else None
        self.layers = nn.ModuleList(SideLayer(width, heads, ladder, **kw) for _ in range(depth))
        self.up = nn.Linear(width, hidden, **kw)
        self.causal = causal
        self.taps: list[torch.Tensor] = []
        self.padding: torch.Tensor | None = None  # the batch's attention mask, 1 = token

    def forward(self) -> torch.Tensor:
        taps, self.taps = self.taps, []
        mask = self._mask(*taps[-1].shape[:2])
        s = None
        for i, (h, down, layer) in enumerate(zip(taps, self.down, self.layers)):
            z = down(h)  # (B, S, width)
            if s is not None:
                mu = torch.sigmoid(self.gates[i - 1] / self.gate_temperature)
                z = mu * z + (1 - mu) * s
            s = layer(z, mask, self.causal)
        return taps[-1] + self.up(s)

    def _mask(self, batch: int, seq: int) -> torch.Tensor | None:
        """None without padding (as transformers drops an all-ones mask), else a boolean
        (B, 1, 1 or S, S) mask, True where attended; causal for the generation tasks."""
        pad = self.padding
        if pad is None or tuple(pad.shape) != (batch, seq) or bool(pad.all()):
            return None
        mask = pad.bool()[:, None, None, :]  # (B, 1, 1, S)
        if self.causal:
            mask = mask & torch.ones(seq, seq, dtype=torch.bool, device=pad.device).tril()
        return mask


def _hidden(out):
    return out[0] if isinstance(out, tuple) else out


def _without_graph(layer: nn.Module, after=None) -> None:
    """Run ``layer`` with grad mode off (hooks, so module paths stay the backbone's); ``after(output)``
    then sees its output with grad mode restored, and may replace it."""
    modes: list[bool] = []

    def pre(module, args):
        modes.append(torch.is_grad_enabled())
        torch.set_grad_enabled(False)

    def post(module, args, out):
        torch.set_grad_enabled(modes.pop())
        # always_call: the hook also runs when the layer raised (out is None), so grad mode comes back
        return after(out) if after is not None and out is not None else None

    layer.register_forward_pre_hook(pre)
    layer.register_forward_hook(post, always_call=True)


def _tap(ladder: Ladder, last: bool):
    def after(out):
        ladder.taps.append(_hidden(out))
        if not last:
            return None
        hidden = ladder()
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    return after


def _keep_padding(ladder: Ladder):
    def hook(model, args, kwargs):
        ladder.padding = kwargs.get("attention_mask")
        ladder.taps = []

    return hook


@register(
    "lst",
    LADDER.description,
    settings=LADDER,
    trains="the side network (downsamplers, gates, side layers, upsampler) and the task head",
    layers_alike=True,
)
def apply(model, backbone, task):
    from meft.families import family_of

    family = family_of(model)
    freeze(model)
    sites = family.meft.find_sites(model)
    top = list(sites[-1].layers)
    heads = int(getattr(model.config, family.fields.heads))
    model.lst_side = Ladder(
        family.hidden_size(model.config), len(top), heads, task in GENERATION_TASKS, next(model.parameters())
    )
    for site in sites[:-1]:
        for layer in site.layers:
            _without_graph(layer)
    for i, layer in enumerate(top):
        _without_graph(layer, _tap(model.lst_side, last=i == len(top) - 1))
    model.register_forward_pre_hook(_keep_padding(model.lst_side), with_kwargs=True)
    unfreeze_head(model)
    return model
