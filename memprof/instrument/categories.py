"""Which category a saved tensor belongs to, from the autograd node (operator) that saved it.

A node's ``name()`` is the backward class PyTorch generates for the operator (``AddmmBackward0``
for ``nn.Linear``'s ``addmm``, ``NativeLayerNormBackward0`` for LayerNorm, ...); custom
``autograd.Function`` nodes are named after the class (``_ReversibleFunctionBackward``). The
categories are ``memprof.results.result.CATEGORIES``.

NOTE [ Dropout on the CPU ]
On CUDA, ``F.dropout`` runs the fused ``native_dropout`` kernel, whose node saves a boolean mask.
On the CPU it is ``input * (bernoulli(1 - p) / (1 - p))``: the mask is a float tensor saved by a
plain ``MulBackward0``. The node name cannot tell it from any other product, so the live tracker
marks storages written by a random-sampling operator (``bernoulli``) and such a storage is a
``dropout_mask`` whatever node saved it (``random_mask=True`` below).

NOTE [ Weights under autocast ]
Under autocast a Linear runs on a low-precision copy of its weight, and backward needs that copy
for the input's gradient, so the Linear's node saves it: the copy is memory held for backward
like any activation (for a frozen fp32 model under bf16 autocast, half the model's size again)
and is counted, with the node's other tensors, as ``linear_input``. The fp32 parameter itself is
never counted (it is ``Memory.parameters``).

NOTE [ MEFT's kept bits ]
MEFT's reversible Function (``meft.reversible``) saves everything its backward needs in one node,
``_ReversibleFunctionBackward``: the two streams atop its layers, the call's tensors (masks), and, in
exact arithmetic, int64 checksums of each layer's input and what each scaling by lam or beta
dropped, packed into uint8 (4 bits per element of each scaled stream per layer for 13/128;
meft.fixed_point NOTE [ Kept bits ]). Those bits are what grows with depth and what exact arithmetic costs over float
arithmetic, so they get their own category, ``reversible_bits``: the uint8 tensors that node saves.
Its other tensors stay ``other``.
"""

from __future__ import annotations

import torch

from memprof.results.result import CATEGORIES

#: Node name -> category. Names not listed are "other".
NODE_CATEGORY: dict[str, str] = {
    # nn.Linear is addmm (with bias) or mm (without) on the flattened input; mv/addmv for 1-D input.
    **dict.fromkeys(
        ("AddmmBackward0", "MmBackward0", "AddmvBackward0", "MvBackward0", "AddbmmBackward0"), "linear_input"
    ),
    # Attention: batched products of Q, K^T, probabilities and V (eager and SDPA's math path), and
    # the fused SDPA kernels, which save Q, K, V, the output and the log-sum-exp instead.
    **dict.fromkeys(
        (
            "BmmBackward0",
            "BaddbmmBackward0",
            "ScaledDotProductEfficientAttentionBackward0",
            "ScaledDotProductFlashAttentionBackward0",
            "ScaledDotProductFlashAttentionForCpuBackward0",
            "ScaledDotProductCudnnAttentionBackward0",
            "ScaledDotProductFusedAttentionOverrideableBackward0",
        ),
        "attention_scores",
    ),
    **dict.fromkeys(("SoftmaxBackward0", "LogSoftmaxBackward0"), "softmax_output"),
    **dict.fromkeys(("NativeDropoutBackward0", "FusedDropoutBackward0"), "dropout_mask"),
    **dict.fromkeys(
        (
            "NativeLayerNormBackward0",
            "NativeBatchNormBackward0",
            "CudnnBatchNormBackward0",
            "NativeGroupNormBackward0",
            "FusedRmsNormBackward0",
            "RmsNormBackward0",
        ),
        "normalization",
    ),
    **dict.fromkeys(
        (
            "GeluBackward0",
            "ReluBackward0",
            "TanhBackward0",
            "SigmoidBackward0",
            "SiluBackward0",
            "ThresholdBackward0",
            "HardtanhBackward0",
            "EluBackward0",
            "LeakyReluBackward0",
            "SoftplusBackward0",
            "MishBackward0",
            "HardswishBackward0",
            "HardsigmoidBackward0",
            "GluBackward0",
            "PreluKernelBackward0",
        ),
        "activation_fn",
    ),
    **dict.fromkeys(("EmbeddingBackward0", "EmbeddingBagBackward0", "EmbeddingDenseBackward0"), "embedding"),
}

#: (node name, dtype of the saved tensor) -> category, for nodes that save tensors of several kinds;
#: it takes precedence over ``NODE_CATEGORY``.
NODE_DTYPE_CATEGORY: dict[tuple[str, torch.dtype], str] = {
    ("_ReversibleFunctionBackward", torch.uint8): "reversible_bits",  # NOTE [ MEFT's kept bits ]
}

assert set(NODE_CATEGORY.values()) | set(NODE_DTYPE_CATEGORY.values()) <= set(CATEGORIES)


def category(node_name: str | None, dtype: torch.dtype | None = None, *, random_mask: bool = False) -> str:
    """The category of a tensor of ``dtype`` saved by the node called ``node_name`` (None: node unknown).

    ``random_mask``: the storage was written by a random-sampling operator, i.e. it is a dropout
    mask (see NOTE [ Dropout on the CPU ]).
    """
    if random_mask:
        return "dropout_mask"
    if node_name is None:
        return "other"
    return NODE_DTYPE_CATEGORY.get((node_name, dtype)) or NODE_CATEGORY.get(node_name, "other")
