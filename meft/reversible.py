"""The autograd Function that back-propagates through reversible layers without storing their
activations (docs/MEFT.md, "One reversible layer"; RevNets, Gomez et al., 2017), and ``MEFTStack``.

The Function keeps only the top layer's two streams (and the tensors of the layer call: masks,
encoder states), plus, in exact arithmetic, the bits each scaling dropped (meft.fixed_point); in
backward it walks the layers top-down, recomputing G and F with autograd on to get their gradients
and reconstructing each layer's input from its output (``meft.coupling``). It never branches on the
backbone family (F and G come from meft.variants) nor on the arithmetic (``Coupling.arith``).

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

NOTE [ One backward ]
In exact arithmetic backward restores each layer's input streams in the memory of its output
streams, the top ones included (those the Function saved), and frees each layer's kept bits once it
is restored: at any moment it holds one pair of integer streams, the kept bits of the layers below,
and, while a layer is undone, one stream-sized integer temporary (an encoded F or G output). So the saved state is used up by one backward; a second one (retain_graph) is refused.

NOTE [ Exactness needs identical recomputation ]
In exact arithmetic a layer's input comes back bit for bit only if F and G recomputed in backward
return exactly what they returned in forward (same kernels, same RNG, same autocast). The forward
keeps an int64 checksum of each of every layer's two input streams; backward compares the reconstruction
with them and raises MEFTError naming the layer if they differ (for example an attention kernel
chosen differently once inputs require grad), so a wrong gradient is never returned silently.
In float arithmetic (the paper's) each inverse divides by lam or beta and an error grows about
1/lam per layer (about 10x for meft1 and meft2, 80-100x for meft3 in fp32): see docs/meft-usage.md.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch._subclasses.fake_tensor import is_fake

from meft import fixed_point as fx
from meft.config import MEFTConfig
from meft.coupling import ARITHMETICS, Arithmetic, Coupling, ExactArithmetic
from meft.errors import MEFTError
from meft.families import Call, LayerKind
from meft.variants import make_adapters, sub_networks

#: observer(phase, layer, raw1, raw2): phase "forward" sees each reversible layer's input streams,
#: "backward" their reconstruction (meft.diagnostics uses it). The tensors are valid during the call
#: only: exact arithmetic's backward reuses their memory for the layers below (clone to keep them).
Observer = Callable[[str, int, torch.Tensor, torch.Tensor], None]


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
    arith: Arithmetic
    keys: tuple[str, ...]  # call entries that are tensors, in the order they are passed to apply
    static: Call
    params: list[nn.Parameter]
    observer: Observer | None = None
    verify: bool = False  # exact arithmetic on real tensors: act on the checksum comparison

    @property
    def exact(self) -> bool:
        """Exact arithmetic keeps and compares checksums (fake tensors too, so memory figures match)."""
        return isinstance(self.arith, ExactArithmetic)

    def call(self, tensors) -> Call:
        return {**self.static, **dict(zip(self.keys, tensors))}


class _ReversibleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan: _Plan, hidden: torch.Tensor, *flat: torch.Tensor):
        tensors = flat[: len(plan.keys)]
        call = plan.call(tensors)
        a = plan.arith
        device = _rng_device(hidden)
        states: list[dict[str, _RngState]] = []
        kept: list[torch.Tensor] = []
        where: list[tuple[int, ...]] = []  # per layer, positions of its kept bits in ``kept`` (-1: none)
        sums: list[torch.Tensor] = []
        checks: list | None = [] if plan.verify else None
        with torch.no_grad():
            x1 = x2 = a.encode(hidden)
            if checks is not None:
                checks.append((f"the input of {plan.couplings[0].name}", fx.float_magnitude(hidden),
                               fx.stream_limit(a.dtype)))
            for i, c in enumerate(plan.couplings):
                if plan.observer is not None:
                    plan.observer("forward", i, x1, x2)
                if plan.exact:
                    sums.append(torch.cat((fx.checksum(x1), fx.checksum(x2))))
                state: dict[str, _RngState] = {}
                states.append(state)
                x1, x2, bits = c.step(x1, x2, call, checks, before=lambda which: state.__setitem__(which, _RngState(device)))
                where.append(tuple(_append(kept, b) for b in bits))
            if checks:
                fx.check_range(checks, a.format)
            x1, x2 = (t.clone() if t is hidden else t for t in (x1, x2))  # autograd: no input as an output
        ctx.plan, ctx.states, ctx.where, ctx.device = plan, states, where, device
        ctx.autocast = _autocast_state(hidden.device.type)
        ctx.n_kept = len(kept)
        # an unused output (the integer streams, the stream merge="plm" drops) gets None, not a tensor of zeros
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x1, x2, *kept, *([torch.stack(sums)] if sums else []), *tensors)
        if isinstance(a, ExactArithmetic):
            ctx.mark_non_differentiable(x1, x2)
            return a.decode(x1), a.decode(x2), x1, x2
        return x1, x2

    @staticmethod
    def backward(ctx, dy1: torch.Tensor | None, dy2: torch.Tensor | None, *_int_grads):
        plan: _Plan = ctx.plan
        a = plan.arith
        if plan.exact:  # NOTE [ One backward ]
            if getattr(ctx, "spent", False):
                raise MEFTError("backward ran twice through a reversible stack in exact arithmetic, whose first "
                                "backward used up the streams and kept bits; run the forward again for each "
                                "backward (retain_graph cannot keep them), or use MEFTConfig(arithmetic='float')")
            ctx.spent = True
        y1, y2, *rest = ctx.saved_tensors
        kept, rest = rest[: ctx.n_kept], rest[ctx.n_kept:]
        sums, tensors = (rest[0], rest[1:]) if plan.exact else (None, rest)
        n = len(tensors)
        needs = ctx.needs_input_grad[2 : 2 + n]
        need_hidden = ctx.needs_input_grad[1]
        leaves = [t.detach().requires_grad_(True) if need else t.detach() for t, need in zip(tensors, needs)]
        call = plan.call(leaves)
        wanted = [leaf for leaf, need in zip(leaves, needs) if need]
        tensor_grads: list[torch.Tensor | None] = [None] * len(wanted)
        index = {id(p): i for i, p in enumerate(plan.params)}
        param_grads: list[torch.Tensor | None] = [None] * len(plan.params)

        def grad_of(out, first, grad_out, params):
            """Accumulate d(out)/d(call tensors, params) . grad_out; return d(out)/d(first) . grad_out."""
            inputs = ([] if first is None else [first]) + wanted + params
            if grad_out is None or not out.requires_grad or not inputs:
                return None
            # as autograd does for an ordinary graph: the incoming gradient takes the output's dtype (autocast)
            grads = list(torch.autograd.grad(out, inputs, grad_out.to(out.dtype), allow_unused=True))
            first_grad = grads.pop(0) if first is not None else None
            for i, g in enumerate(grads[: len(wanted)]):
                tensor_grads[i] = _add(tensor_grads[i], g)
            for p, g in zip(params, grads[len(wanted):]):
                param_grads[index[id(p)]] = _add(param_grads[index[id(p)]], g)
            return first_grad

        mismatches: list[torch.Tensor] = []
        devices = [] if ctx.device is None else [ctx.device]
        device_type = "cuda" if ctx.device is None else ctx.device.type
        with torch.random.fork_rng(devices=devices, device_type=device_type):
            for i in reversed(range(len(plan.couplings))):
                c, state = plan.couplings[i], ctx.states[i]
                k1, k2 = (None if j < 0 else kept[j] for j in ctx.where[i])
                if c.swap:  # undo the swap: (y1, y2) are this layer's outputs before it
                    y1, y2, dy1, dy2 = y2, y1, dy2, dy1
                params = c.trainable_parameters()
                g = None
                if c.g is not None:
                    state["g"].restore()
                    with torch.enable_grad(), _autocast(ctx.autocast):  # the forward's autocast, not backward's
                        y1_ = a.decode(y1).detach().requires_grad_(True)
                        g = c.g(y1_, call)
                    dy1 = _add(dy1, grad_of(g, y1_, dy2, params))  # dy1_total
                    g = g.detach()
                    del y1_  # exact arithmetic: a decoded copy, not a view; free it before F runs
                with torch.no_grad():
                    x2 = a.inverse_affine(y2, k2, c.beta, g)
                del g
                state["f"].restore()
                bottom = i == 0 and not need_hidden  # nothing below wants d(input): skip it
                with torch.enable_grad(), _autocast(ctx.autocast):
                    x2_ = a.decode(x2).detach().requires_grad_(not bottom)
                    f = c.f(x2_, call)
                df = grad_of(f, None if bottom else x2_, dy1, params)
                del x2_
                with torch.no_grad():
                    x1 = a.inverse_affine(y1, k1, c.lam, f.detach())
                del f
                fx.release(k1), fx.release(k2)  # this layer is restored: its kept bits are spent
                beta, lam = a.factor(c.beta), a.factor(c.lam)
                dx2 = None if bottom else _add(_times(dy2, beta), df)
                dx1 = None if bottom else _times(dy1, lam)
                if plan.exact:  # compared on fake tensors too (same memory); only read when real
                    mismatches.append((torch.cat((fx.checksum(x1), fx.checksum(x2))) != sums[i]).any())
                if plan.observer is not None:
                    plan.observer("backward", i, x1, x2)
                y1, y2, dy1, dy2 = x1, x2, dx1, dx2
        if plan.verify:
            _check_reconstruction(plan, mismatches[::-1])
        grads = iter(tensor_grads)
        flat_tensor_grads = [next(grads) if need else None for need in needs]
        hidden_grad = _add(dy1, dy2) if need_hidden else None
        return (None, hidden_grad, *flat_tensor_grads, *param_grads)


def _append(items: list, item) -> int:
    if item is None:
        return -1
    items.append(item)
    return len(items) - 1


def _check_reconstruction(plan: _Plan, mismatches: list[torch.Tensor]) -> None:
    bad = [i for i, m in enumerate(torch.stack(mismatches).tolist()) if m]
    if bad:
        name = plan.couplings[bad[-1]].name
        raise MEFTError(
            f"reversible backward: the reconstructed input of {name} differs from the forward's, so F or G "
            "did not compute the same bits when recomputed (a different kernel once inputs require grad, or "
            "non-deterministic kernels); gradients would be wrong. Use attn_implementation='eager' and "
            "deterministic kernels (torch.use_deterministic_algorithms(True)), or MEFTConfig(arithmetic='float')"
        )


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def _times(grad: torch.Tensor | None, factor: float) -> torch.Tensor | None:
    return grad * factor if grad is not None and factor != 1 else grad


def _autocast(state: dict[str, dict[str, Any]]) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for device_type, kwargs in state.items():
        stack.enter_context(torch.autocast(device_type=device_type, **kwargs))
    return stack


def reversible(couplings: list[Coupling], hidden: torch.Tensor, call: Call, observer: Observer | None = None):
    """Run ``couplings`` bottom-up from (hidden, hidden), keeping only the top outputs for backward.

    Every tensor in ``call`` is an input of the Function (a gradient is returned for those that
    require one, e.g. BART's encoder_hidden_states); non-tensor entries are passed through unchanged.
    Returns the top layer's two streams, in the couplings' arithmetic.
    """
    a = couplings[0].arith
    keys = tuple(k for k, v in call.items() if isinstance(v, torch.Tensor))
    static = {k: v for k, v in call.items() if k not in keys}
    params = list({id(p): p for c in couplings for p in c.trainable_parameters()}.values())
    plan = _Plan(couplings, a, keys, static, params, observer)
    plan.verify = plan.exact and fx.has_values(hidden)
    out = _ReversibleFunction.apply(plan, hidden, *(call[k] for k in keys), *params)
    if isinstance(a, ExactArithmetic):
        c1, c2, r1, r2 = out
        return a.stream(c1, r1), a.stream(c2, r2)
    return out


class MEFTStack(nn.Module):
    """Stands in for a whole layer stack: the family's layer loop calls it once, like one layer.

    Holds the original layers (``base_layers``, frozen and unmodified) and the adapters of each
    layer (``adapters``). Both streams start as the stack's input; the lowest ``num_rev_layers``
    layers run through the reversible Function when training with grad enabled (all but the top one
    when ``cache_top`` and every layer is reversible), the rest (and every layer in eval mode or
    under ``torch.no_grad()``) run as a plain forward. The output is the merge
    of the two streams (``MEFTConfig.merge``).
    """

    def __init__(
        self, layers: nn.ModuleList, kind: LayerKind, config: MEFTConfig, hidden_size: int, activation: str,
        name: str = "layers", cache_top: bool = False,
    ):
        super().__init__()
        self.name = name  # the stack's role in messages: "encoder", "decoder"
        self.base_layers = layers
        top = len(layers) - 1
        self.adapters = nn.ModuleList(
            make_adapters(config, hidden_size, activation, like=next(layer.parameters()), top=i == top)
            for i, layer in enumerate(layers)
        )
        self.kind = kind
        self.meft_config = config
        self.num_rev_layers = len(layers) if config.num_rev_layers is None else config.num_rev_layers
        self.cache_top = cache_top  # MEFTConfig.cache_top_layer, resolved for this stack by meft.convert
        self.observer: Observer | None = None

    @property
    def reversible_layers(self) -> int:
        """How many layers a training step runs through the reversible Function (from the bottom)."""
        n = self.num_rev_layers
        return n - 1 if self.cache_top and n == len(self.base_layers) else n

    def couplings(self, dtype: torch.dtype) -> list[Coupling]:
        """The layers as couplings whose streams decode to ``dtype`` (the stack input's)."""
        cfg = self.meft_config
        arith = ARITHMETICS[cfg.arithmetic](dtype)
        lam, beta = arith.scale_of("lam", cfg.effective_lam), arith.scale_of("beta", cfg.effective_beta)
        out = []
        for i, (layer, adapters) in enumerate(zip(self.base_layers, self.adapters)):
            f, g = sub_networks(cfg.variant, self.kind, layer, adapters)
            out.append(Coupling(f, g, lam, beta, cfg.spec.swap, (layer, adapters), arith, f"{self.name} layer {i}"))
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
        couplings = self.couplings(hidden.dtype)
        arith = couplings[0].arith
        n = self.reversible_layers
        if n > 0 and self.training and torch.is_grad_enabled():
            call = self.kind.without_cache(call)
            s1, s2 = reversible(couplings[:n], hidden, call, self.observer)
            couplings = couplings[n:]
        else:
            s1 = s2 = arith.lift(hidden, f"the input of {couplings[0].name}")
        for c in couplings:
            s1, s2 = c(s1, s2, call)
        return self.merge(arith.carrier(s1), arith.carrier(s2))

    def extra_repr(self) -> str:
        cfg = self.meft_config
        return (f"{self.name}: variant={cfg.variant}, arithmetic={cfg.arithmetic}, {cfg.describe_scales()}, "
                f"num_rev_layers={self.num_rev_layers}/{len(self.base_layers)}, cache_top={self.cache_top}, "
                f"merge={cfg.merge}")
