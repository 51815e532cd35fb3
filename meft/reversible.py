"""Reversible two-stream layers and the autograd Function that back-propagates through them without
storing their activations (MEFT.md, "One reversible layer"; RevNets, Gomez et al., 2017).

    y1 = lam * x1 + F(x2)          x2 = (y2 - G(y1)) / beta
    y2 = beta * x2 + G(y1)         x1 = (y1 - F(x2)) / lam

The Function keeps only the top layer's two streams (and the tensors of the layer call: masks,
encoder states); in backward it walks the layers top-down, recomputing G and F with autograd on to
get their gradients and reconstructing each layer's input from its output. It never branches on
the backbone family: F and G come from meft.variants, built on the family's ``LayerKind``.

NOTE [ Why the trainable parameters are inputs of the Function ]
Autograd calls a Function's backward only if one of its inputs requires grad. With frozen
embeddings, neither x1 nor x2 does; the authors' code switched on a LayerNorm's gradient to force
it. Here the trainable parameters of the reversible layers are passed to ``apply`` and their
gradients are returned from backward (computed with ``torch.autograd.grad``), so no frozen weight
is touched, gradients accumulate the ordinary way, and ``torch.autograd.grad(loss, params)`` works.

NOTE [ Dropout in the recomputation ]
F and G are recomputed in backward and must draw the same dropout masks as in forward. As in
torch.utils.checkpoint, the CPU RNG state (and the input device's state when it is an accelerator)
is saved before each F and each G in forward, set again before its recomputation, and the caller's
RNG state is restored after backward (``torch.random.fork_rng``). The global generator is never
reseeded. Fake tensors (torch's FakeTensorMode) draw no random numbers; only the CPU state is kept.
Autocast settings of the forward are re-entered for the recomputation, as checkpoint does.

NOTE [ Reconstruction error ]
Each inverse divides by lam or beta, so an error in a layer's output reaches its input about
1/lam (meft1, meft2) or 1/(lam * beta) (meft3) times larger, damped only by how contractive the
layer is. Measured (benchmarks/meft_reconstruction.py, bert-base width and all-MiniLM-L6-v2): in
fp32 about 10x per layer for meft1 and meft2 and 80-100x for meft3, so about 5 (meft1, meft2) or 2
(meft3) layers stay under 1% error; bf16 and fp16 are near 1e-2 after one layer and fp16 overflows
after 4-8. Hence ``num_rev_layers``: the layers above it use ordinary backprop and add no error;
``meft.reconstruction_error`` measures a given model, dtype and batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import is_fake

from meft.config import MEFTConfig
from meft.families import Call, LayerKind
from meft.variants import SubNet, make_adapters, sub_networks


@dataclass(frozen=True)
class Coupling:
    """One reversible layer: y1 = lam * x1 + F(x2), y2 = beta * x2 + G(y1), then (y2, y1) if ``swap``."""

    f: SubNet
    g: SubNet
    lam: float
    beta: float
    swap: bool
    modules: tuple[nn.Module, ...]  # whose parameters F and G use

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor, call: Call) -> tuple[torch.Tensor, torch.Tensor]:
        y1 = self.lam * x1 + self.f(x2, call)
        y2 = self.beta * x2 + self.g(y1, call)
        return (y2, y1) if self.swap else (y1, y2)

    def inverse(self, x1: torch.Tensor, x2: torch.Tensor, call: Call) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's inputs from its outputs (x1, x2 as returned by ``__call__``)."""
        y1, y2 = (x2, x1) if self.swap else (x1, x2)
        in2 = (y2 - self.g(y1, call)) / self.beta
        in1 = (y1 - self.f(in2, call)) / self.lam
        return in1, in2

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules for p in m.parameters() if p.requires_grad]


class _RngState:
    """CPU RNG state, plus the state of ``device`` when it is an accelerator."""

    def __init__(self, device: torch.device | None) -> None:
        self.cpu = torch.get_rng_state()
        self.device = device
        self.device_state = None if device is None else torch.get_device_module(device.type).get_rng_state(device)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.device is not None:
            torch.get_device_module(self.device.type).set_rng_state(self.device_state, self.device)


def _rng_device(x: torch.Tensor) -> torch.device | None:
    if x.device.type in ("cpu", "meta") or is_fake(x):
        return None
    return x.device


def _autocast_state(device_type: str) -> dict[str, dict[str, Any]]:
    state = {}
    for kind in dict.fromkeys((device_type, "cpu")):
        if torch.amp.is_autocast_available(kind):
            state[kind] = {
                "enabled": torch.is_autocast_enabled(kind),
                "dtype": torch.get_autocast_dtype(kind),
                "cache_enabled": torch.is_autocast_cache_enabled(),
            }
    return state


@dataclass
class _Plan:
    """What the Function needs besides tensors: the layers, the non-tensor part of the call, the parameters."""

    couplings: list[Coupling]
    keys: tuple[str, ...]  # call entries that are tensors, in the order they are passed to apply
    static: Call
    params: list[nn.Parameter]

    def call(self, tensors) -> Call:
        return {**self.static, **dict(zip(self.keys, tensors))}


class _ReversibleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan: _Plan, x1: torch.Tensor, x2: torch.Tensor, *flat: torch.Tensor):
        tensors = flat[: len(plan.keys)]
        call = plan.call(tensors)
        device = _rng_device(x1)
        states = []
        with torch.no_grad():
            for c in plan.couplings:
                state_f = _RngState(device)
                y1 = c.lam * x1 + c.f(x2, call)
                state_g = _RngState(device)
                y2 = c.beta * x2 + c.g(y1, call)
                x1, x2 = (y2, y1) if c.swap else (y1, y2)
                states.append((state_f, state_g))
        ctx.plan, ctx.states, ctx.device = plan, states, device
        ctx.autocast = _autocast_state(x1.device.type)
        ctx.save_for_backward(x1, x2, *tensors)
        return x1, x2

    @staticmethod
    def backward(ctx, dy1: torch.Tensor, dy2: torch.Tensor):
        plan: _Plan = ctx.plan
        y1, y2, *tensors = ctx.saved_tensors
        n = len(tensors)
        needs = ctx.needs_input_grad[3 : 3 + n]
        leaves = [t.detach().requires_grad_(True) if need else t.detach() for t, need in zip(tensors, needs)]
        call = plan.call(leaves)
        wanted = [leaf for leaf, need in zip(leaves, needs) if need]
        tensor_grads: list[torch.Tensor | None] = [None] * len(wanted)
        index = {id(p): i for i, p in enumerate(plan.params)}
        param_grads: list[torch.Tensor | None] = [None] * len(plan.params)

        def grad_of(out, first, grad_out, params):
            grads = torch.autograd.grad(out, [first, *wanted, *params], grad_out, allow_unused=True)
            for i, g in enumerate(grads[1 : 1 + len(wanted)]):
                tensor_grads[i] = _add(tensor_grads[i], g)
            for p, g in zip(params, grads[1 + len(wanted) :]):
                param_grads[index[id(p)]] = _add(param_grads[index[id(p)]], g)
            return grads[0] if grads[0] is not None else torch.zeros_like(first)

        devices = [] if ctx.device is None else [ctx.device]
        device_type = "cuda" if ctx.device is None else ctx.device.type
        with torch.random.fork_rng(devices=devices, device_type=device_type), _autocast(ctx.autocast):
            for c, (state_f, state_g) in zip(reversed(plan.couplings), reversed(ctx.states)):
                if c.swap:  # undo the swap: (y1, y2) are this layer's outputs before it
                    y1, y2, dy1, dy2 = y2, y1, dy2, dy1
                params = c.trainable_parameters()
                state_g.restore()
                with torch.enable_grad():
                    y1_ = y1.detach().requires_grad_(True)
                    g = c.g(y1_, call)
                dy1 = dy1 + grad_of(g, y1_, dy2, params)  # dy1_total
                with torch.no_grad():
                    x2 = (y2 - g) / c.beta
                del g
                state_f.restore()
                with torch.enable_grad():
                    x2_ = x2.detach().requires_grad_(True)
                    f = c.f(x2_, call)
                dx2 = c.beta * dy2 + grad_of(f, x2_, dy1, params)
                dx1 = c.lam * dy1
                with torch.no_grad():
                    x1 = (y1 - f) / c.lam
                del f
                y1, y2, dy1, dy2 = x1, x2, dx1, dx2
        grads = iter(tensor_grads)
        flat_tensor_grads = [next(grads) if need else None for need in needs]
        return (None, dy1, dy2, *flat_tensor_grads, *param_grads)


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def _autocast(state: dict[str, dict[str, Any]]) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for device_type, kwargs in state.items():
        stack.enter_context(torch.autocast(device_type=device_type, **kwargs))
    return stack


def reversible(couplings: list[Coupling], x1: torch.Tensor, x2: torch.Tensor, call: Call):
    """Run ``couplings`` bottom-up, keeping only the top outputs for backward (see module docstring).

    Every tensor in ``call`` is an input of the Function (a gradient is returned for those that
    require one, e.g. BART's encoder_hidden_states); non-tensor entries are passed through unchanged.
    Returns the top layer's (x1, x2).
    """
    if not couplings:
        return x1, x2
    keys = tuple(k for k, v in call.items() if isinstance(v, torch.Tensor))
    static = {k: v for k, v in call.items() if k not in keys}
    params = list({id(p): p for c in couplings for p in c.trainable_parameters()}.values())
    plan = _Plan(couplings, keys, static, params)
    return _ReversibleFunction.apply(plan, x1, x2, *(call[k] for k in keys), *params)


class MEFTStack(nn.Module):
    """Stands in for a whole layer stack: the family's layer loop calls it once, like one layer.

    Holds the original layers (``base_layers``, frozen and unmodified) and two adapters per layer
    (``adapters``). Both streams start as the stack's input; the lowest ``num_rev_layers`` layers
    run through the reversible Function when training with grad enabled, the rest (and every layer
    in eval mode or under ``torch.no_grad()``) run as a plain forward. The output is the merge of
    the two streams (``MEFTConfig.merge``).
    """

    def __init__(
        self, layers: nn.ModuleList, kind: LayerKind, config: MEFTConfig, hidden_size: int, activation: str,
        name: str = "layers",
    ):
        super().__init__()
        self.name = name  # the stack's role in messages: "encoder", "decoder"
        self.base_layers = layers
        self.adapters = nn.ModuleList(
            make_adapters(config, hidden_size, activation, like=next(layer.parameters())) for layer in layers
        )
        self.kind = kind
        self.meft_config = config
        self.num_rev_layers = len(layers) if config.num_rev_layers is None else config.num_rev_layers

    def couplings(self) -> list[Coupling]:
        cfg = self.meft_config
        out = []
        for layer, adapters in zip(self.base_layers, self.adapters):
            f, g = sub_networks(cfg.variant, self.kind, layer, adapters)
            out.append(Coupling(f, g, cfg.effective_lam, cfg.effective_beta, cfg.spec.swap, (layer, adapters)))
        return out

    def bind(self, args: tuple, kwargs: dict[str, Any]) -> tuple[torch.Tensor, Call]:
        """The stack's input and the layer call, from the arguments the family's loop passed."""
        return self.kind.bind(self.base_layers[0], args, kwargs)

    def merge(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if self.meft_config.merge == "mean":
            return (x1 + x2) / 2
        return (x1, x2)[self.meft_config.spec.plm_stream]

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        hidden, call = self.bind(args, kwargs)  # (B, T, H)
        couplings = self.couplings()
        x1 = x2 = hidden
        n = self.num_rev_layers
        if n > 0 and self.training and torch.is_grad_enabled():
            call = self.kind.without_cache(call)
            x1, x2 = reversible(couplings[:n], x1, x2, call)
            couplings = couplings[n:]
        for c in couplings:
            x1, x2 = c(x1, x2, call)
        return self.merge(x1, x2)

    def extra_repr(self) -> str:
        cfg = self.meft_config
        return (f"{self.name}: variant={cfg.variant}, lam={cfg.effective_lam}, beta={cfg.effective_beta}, "
                f"num_rev_layers={self.num_rev_layers}/{len(self.base_layers)}, merge={cfg.merge}")
