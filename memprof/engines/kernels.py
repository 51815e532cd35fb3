"""The target device's kernels, modelled for the fake engine (fake tensors live on the CPU here).

A ``TorchFunctionMode`` that changes three things above autograd, so that autograd records and
saves what it would on the target:

* Attention (``F.scaled_dot_product_attention``): the backend the target's dispatcher would pick
  is chosen (see NOTE [ SDPA backends ]) and the matching aten kernel called; its meta kernel
  gives the shapes, its autograd formula the saved tensors. The choice is recorded.
* Dropout on cuda: ``F.dropout`` becomes ``native_dropout`` (CUDA's fused kernel: a boolean mask
  is saved) instead of the CPU's ``input * bernoulli`` (a mask in the input's dtype).
* Autocast on cuda (``mixed-*`` dtypes): CUDA autocast's casting policy, emulated function by
  function (see NOTE [ Emulated CUDA autocast ]). For target cpu the engine uses the CPU's real
  ``torch.autocast`` instead.

NOTE [ SDPA backends ]
cpu: PyTorch's CPU dispatcher (``torch._fused_sdp_choice``) is asked directly, on small real
stand-ins with the same dtypes, shapes (expanded from one row) and flags; ``FLASH_ATTENTION``
runs ``_scaled_dot_product_flash_attention_for_cpu`` (saves Q, K, V, output, log-sum-exp),
``MATH`` the decomposed path (fake tensors' own choice), which saves the O(s^2) probabilities and,
with dropout, the mask. On this torch the CPU picks flash unless dropout is on (BERT's attention
dropout) -- and the fake engine now agrees with the cpu engine byte for byte.
cuda: the rules of ``sdp_utils.cpp`` for an sm80+ GPU (A100, H100) with the default priority
flash > efficient > math: flash needs fp16/bf16, no explicit mask, equal head dims <= 256 and a
square causal mask; memory-efficient takes fp32/fp16/bf16, a mask (converted to an additive bias
in the query's dtype and padded to 8 columns, as CUDA does) and head dims that are a multiple of
8 (half) or 4 (fp32), no grouped-query attention; anything else is math. Flash saves Q, K, V, the
output, a (B, H, S) fp32 log-sum-exp and the RNG state; efficient the same plus the bias, with the
log-sum-exp rounded up to 32 rows. cuDNN attention, which PyTorch ranks after math by default,
is not modelled. Names recorded: sdpa-flash, sdpa-efficient, sdpa-math (cuda); sdpa-flash-cpu,
sdpa-math (cpu).

NOTE [ Emulated CUDA autocast ]
Function-level reproduction of ``autocast_mode.cpp``'s CUDA lists for the functions these models
call: matrix products (linear, matmul, bmm, baddbmm, addmm, mm, einsum, SDPA) run in the autocast
dtype, with the cast of a trainable leaf (a parameter) cached until the forward ends as CUDA does;
layer/group norm, the losses and exp/log/pow-style functions run in fp32; softmax, log_softmax,
sum, cumsum, prod get ``dtype=float32`` when given a half input. Everything else runs in its
input's dtype, and binary operators promote as usual (so the residual stream stays fp32 after a
fp32 LayerNorm, as on the GPU). Not modelled: operators reached only from C++ composites, the
GradScaler, and caching within a recomputation (recomputed casts are made afresh each time).

NOTE [ Recomputation in backward ]
Gradient checkpointing and MEFT run forward code again inside backward, and it must meet the same
kernels as the forward. But a torch-function mode is not active in backward when backward is
entered through ``Tensor.backward`` -- that call is itself dispatched through the mode, which
is popped while its handler runs. ``KernelModel.backward(loss)`` therefore starts autograd's
engine directly (what ``torch.autograd.backward`` does after its dispatch), with the mode on the
stack, and with the forward's autocast setting on (checkpoint and MEFT re-enter the forward's
autocast for their recomputation, as they would on the GPU).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.graph import _engine_run_backward
from torch.nn.attention import SDPBackend
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import _disable_current_modes

from memprof.instrument.attention import BACKENDS

aten = torch.ops.aten
_HALF = (torch.float16, torch.bfloat16)

_LOWER = (
    F.linear,
    torch.matmul,
    torch.Tensor.matmul,
    torch.Tensor.__matmul__,
    torch.Tensor.__rmatmul__,
    torch.bmm,
    torch.Tensor.bmm,
    torch.mm,
    torch.Tensor.mm,
    torch.baddbmm,
    torch.Tensor.baddbmm,
    torch.addmm,
    torch.Tensor.addmm,
    torch.addbmm,
    torch.mv,
    torch.addmv,
    torch.einsum,
    F.conv1d,
    F.conv2d,
    F.conv3d,
)
_FP32 = (
    F.layer_norm,
    torch.layer_norm,
    F.group_norm,
    torch.group_norm,
    F.nll_loss,
    F.mse_loss,
    F.l1_loss,
    F.smooth_l1_loss,
    F.huber_loss,
    F.kl_div,
    F.binary_cross_entropy_with_logits,
    F.softplus,
    F.cosine_similarity,
    torch.cdist,
    torch.exp,
    torch.Tensor.exp,
    torch.log,
    torch.Tensor.log,
    torch.pow,
    torch.Tensor.pow,
    torch.Tensor.__pow__,
    torch.rsqrt,
    torch.Tensor.rsqrt,
    torch.reciprocal,
    torch.Tensor.reciprocal,
    torch.logsumexp,
    torch.Tensor.logsumexp,
    torch.log1p,
    torch.expm1,
)
#: function -> index of its positional ``dtype`` argument
_FP32_DTYPE = {
    F.softmax: 3,
    F.log_softmax: 3,
    torch.softmax: 2,
    torch.Tensor.softmax: 2,
    torch.log_softmax: 2,
    torch.Tensor.log_softmax: 2,
    torch.cumsum: 2,
    torch.Tensor.cumsum: 2,
    torch.sum: 99,
    torch.Tensor.sum: 99,
    torch.prod: 99,
    torch.Tensor.prod: 99,
}


def _sdpa_args(args: tuple, kwargs: dict) -> tuple:
    names = ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    defaults = (None, 0.0, False, None, False)
    q, k, v, *rest = args
    values = [kwargs.get(n, rest[i] if i < len(rest) else d) for i, (n, d) in enumerate(zip(names, defaults))]
    return (q, k, v, *values)


def _stand_in(t: torch.Tensor, requires_grad: bool = False) -> torch.Tensor:
    """A real tensor with ``t``'s shape and dtype and a unit last stride, one row of memory (a
    symbolic size, in a formula trace, at its example value: the CPU's choice reads no size)."""
    shape = [n.node.hint if isinstance(n, torch.SymInt) else n for n in t.shape]
    row = torch.empty(shape[-1] if t.dim() else 1, dtype=t.dtype)
    return row.requires_grad_(requires_grad and t.dtype.is_floating_point).expand(shape)


def cpu_choice(q, k, v, mask, dropout_p, is_causal, scale, enable_gqa) -> SDPBackend:
    """What ``F.scaled_dot_product_attention`` would run on the CPU for these arguments."""
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    with _disable_current_modes():
        args = [_stand_in(q, grad), _stand_in(k, grad), _stand_in(v, grad)]
        m = None if mask is None else _stand_in(mask)
        return SDPBackend(torch._fused_sdp_choice(*args, m, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa))


def cuda_choice(q, k, v, mask, dropout_p, is_causal, scale, enable_gqa) -> SDPBackend:
    """What an sm80+ GPU would run (see NOTE [ SDPA backends ])."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or not (q.dtype == k.dtype == v.dtype):
        return SDPBackend.MATH
    d, dk, dv = q.shape[-1], k.shape[-1], v.shape[-1]
    gqa = enable_gqa and q.shape[1] != k.shape[1]
    square = q.shape[-2] == k.shape[-2]
    if q.dtype in _HALF and mask is None and d == dk == dv and d <= 256 and (square or not is_causal):
        return SDPBackend.FLASH_ATTENTION
    align = 8 if q.dtype in _HALF else 4
    if q.dtype in (*_HALF, torch.float32) and d == dk and d % align == 0 and dv % align == 0 and not gqa:
        return SDPBackend.EFFICIENT_ATTENTION
    return SDPBackend.MATH


def _additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask as the additive bias SDPA builds from it (0 keep, -inf drop)."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.where(mask.logical_not(), -math.inf, torch.zeros((), dtype=dtype))


class KernelModel(TorchFunctionMode):
    """The target's attention, dropout and (cuda) autocast, for fake tensors on the CPU.

    ``choices`` lists the attention kernel of every SDPA call, by name. Turn the emulated
    autocast on around the forward with ``autocast()`` (only does something for target cuda
    with an ``autocast_dtype``).
    """

    def __init__(self, target: str, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.target = target
        self.autocast_dtype = autocast_dtype if target == "cuda" else None
        self.choices: list[str] = []
        self._autocast_on = False
        self._autocast_used = False
        self._cache_casts = True
        self._cast_cache: dict[int, torch.Tensor] = {}
        handlers: dict[Callable, Callable] = {F.scaled_dot_product_attention: self._sdpa}
        # NOTE [ Branches on activation values ] (fake.py): mark the answer to "all finite?"
        for fn in (torch.isfinite, torch.Tensor.isfinite):
            handlers[fn] = self._isfinite
        for fn in (torch.all, torch.Tensor.all):
            handlers[fn] = self._all
        if target == "cuda":
            handlers[F.dropout] = self._dropout
        if self.autocast_dtype is not None:
            for fn in _LOWER:
                handlers.setdefault(fn, self._lower)
            for fn in _FP32:
                handlers[fn] = self._fp32
            for fn in _FP32_DTYPE:
                handlers[fn] = self._fp32_dtype
        self._handlers = handlers

    def __torch_function__(self, func, types, args=(), kwargs=None):
        handler = self._handlers.get(func)
        if handler is None:
            return func(*args, **(kwargs or {}))
        return handler(func, args, kwargs or {})

    def _isfinite(self, func, args, kwargs):
        out = func(*args, **kwargs)
        out._memprof_finite = True
        return out

    def _all(self, func, args, kwargs):
        out = func(*args, **kwargs)
        if getattr(args[0], "_memprof_finite", False) and len(args) == 1 and not kwargs:
            out._memprof_all_finite = True
        return out

    @contextlib.contextmanager
    def autocast(self):
        """The emulated CUDA autocast region (the forward)."""
        if self.autocast_dtype is None:
            yield
            return
        self._autocast_on = self._autocast_used = True
        try:
            yield
        finally:
            self._autocast_on = False
            self._cast_cache.clear()

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()`` with this mode active inside autograd (NOTE [ Recomputation in backward ])."""
        seed = torch.ones_like(loss)
        before = self._autocast_on
        self._autocast_on, self._cache_casts = self._autocast_used, False
        try:
            _engine_run_backward((loss,), (seed,), False, False, (), allow_unreachable=True, accumulate_grad=True)
        finally:
            self._autocast_on, self._cache_casts = before, True
            self._cast_cache.clear()

    # -- autocast --------------------------------------------------------------------------

    def _cast(self, x: Any, dtype: torch.dtype, only: tuple[torch.dtype, ...]) -> Any:
        if not isinstance(x, torch.Tensor) or x.dtype not in only or x.dtype == dtype:
            if isinstance(x, (list, tuple)):
                return type(x)(self._cast(e, dtype, only) for e in x)
            return x
        if x.is_leaf and x.requires_grad and self._cache_casts:
            cached = self._cast_cache.get(id(x))
            if cached is None:
                cached = self._cast_cache[id(x)] = x.to(dtype)
            return cached
        return x.to(dtype)

    def _lower(self, func, args, kwargs):
        if self._autocast_on:
            low = self.autocast_dtype
            args = tuple(self._cast(a, low, (torch.float32,)) for a in args)
            kwargs = {k: self._cast(v, low, (torch.float32,)) for k, v in kwargs.items()}
        return func(*args, **kwargs)

    def _fp32(self, func, args, kwargs):
        if self._autocast_on:
            args = tuple(self._cast(a, torch.float32, _HALF) for a in args)
            kwargs = {k: self._cast(v, torch.float32, _HALF) for k, v in kwargs.items()}
        return func(*args, **kwargs)

    def _fp32_dtype(self, func, args, kwargs):
        if (
            self._autocast_on
            and args
            and isinstance(args[0], torch.Tensor)
            and args[0].dtype in _HALF
            and kwargs.get("dtype") is None
            and len(args) <= _FP32_DTYPE[func]
        ):
            kwargs = {**kwargs, "dtype": torch.float32}
        return func(*args, **kwargs)

    # -- attention and dropout -------------------------------------------------------------

    def _sdpa(self, func, args, kwargs):
        if self._autocast_on:
            low = self.autocast_dtype
            args = tuple(self._cast(a, low, (torch.float32,)) for a in args)
            kwargs = {k: self._cast(v, low, (torch.float32,)) for k, v in kwargs.items()}
        q, k, v, mask, dropout_p, is_causal, scale, gqa = _sdpa_args(args, kwargs)
        if self.target == "cpu":
            backend = cpu_choice(q, k, v, mask, dropout_p, is_causal, scale, gqa)
            self.choices.append(BACKENDS["cpu"].get(backend, f"sdpa-{backend.name.lower()}"))
            if backend == SDPBackend.FLASH_ATTENTION:
                bias = _additive_mask(mask, q.dtype)
                return aten._scaled_dot_product_flash_attention_for_cpu(
                    q, k, v, dropout_p, is_causal, attn_mask=bias, scale=scale
                )[0]
            return func(*args, **kwargs)
        backend = cuda_choice(q, k, v, mask, dropout_p, is_causal, scale, gqa)
        self.choices.append(BACKENDS["cuda"][backend])
        if backend == SDPBackend.FLASH_ATTENTION:
            return aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, False, scale=scale)[0]
        if backend == SDPBackend.EFFICIENT_ATTENTION:
            bias = _additive_mask(mask, q.dtype)
            if bias is not None:
                if any(bias.stride(i) % 8 for i in range(bias.dim() - 1)) or bias.stride(-1) != 1:
                    n = bias.shape[-1]
                    bias = F.pad(bias, (0, 8 - n % 8))[..., :n]  # CUDA's pad_bias: aligned rows
                bias = bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
            lse = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
            return aten._scaled_dot_product_efficient_attention(q, k, v, bias, lse, dropout_p, is_causal, scale=scale)[
                0
            ]
        return func(*args, **kwargs)

    def _dropout(self, func, args, kwargs):
        names = ("input", "p", "training", "inplace")
        defaults = (None, 0.5, True, False)
        x, p, training, inplace = (
            kwargs.get(n, args[i] if i < len(args) else d) for i, (n, d) in enumerate(zip(names, defaults))
        )
        if training and 0 < p < 1 and x.numel() > 0 and not inplace:
            return aten.native_dropout(x, p, True)[0]
        return func(*args, **kwargs)
