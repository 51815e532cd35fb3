"""Attention kernels by name: the one place that names SDPA's kernels, for the instrument that
sees them run (``live``), the fake engine that chooses them (``engines.kernels``) and the Result's
``attn_implementation`` field (``attention_name``)."""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend

aten = torch.ops.aten

#: SDPA's fused kernels as the dispatcher runs them (the math path is decomposed above the
#: dispatcher and shows no operator of its own).
FUSED_KERNELS = {
    aten._scaled_dot_product_flash_attention_for_cpu.default: "sdpa-flash-cpu",
    aten._scaled_dot_product_flash_attention.default: "sdpa-flash",
    aten._scaled_dot_product_efficient_attention.default: "sdpa-efficient",
    aten._scaled_dot_product_cudnn_attention.default: "sdpa-cudnn",
    aten._scaled_dot_product_fused_attention_overrideable.default: "sdpa-overrideable",
}
#: The backends the fake engine chooses among, per target, by the same names.
BACKENDS = {
    "cpu": {SDPBackend.FLASH_ATTENTION: "sdpa-flash-cpu", SDPBackend.MATH: "sdpa-math"},
    "cuda": {
        SDPBackend.FLASH_ATTENTION: "sdpa-flash",
        SDPBackend.EFFICIENT_ATTENTION: "sdpa-efficient",
        SDPBackend.MATH: "sdpa-math",
        SDPBackend.CUDNN_ATTENTION: "sdpa-cudnn",
    },
}


def attention_name(kernels: list[str], attn: str | None, *, observed: bool = False) -> str:
    """``eager``, or the SDPA kernels the step used, joined by '+' in order of first use.

    ``kernels``: the fake engine's kernel choices, or (``observed=True``) the fused kernels a real
    step ran, where SDPA's math path leaves no operator of its own: an sdpa model that ran no fused
    kernel ran the math path.
    """
    if attn == "eager":
        return "eager"
    names = "+".join(dict.fromkeys(kernels))
    if names:
        return names
    if attn == "sdpa":
        return "sdpa-math" if observed else "sdpa-unused"
    return str(attn or "none")
