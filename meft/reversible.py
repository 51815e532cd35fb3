"""The autograd Function that back-propagates through reversible layers without storing their
activations (docs/MEFT.md, "One reversible layer"; RevNets, Gomez et al., 2017), and ``MEFTStack``.

The Function keeps only the top layer's two streams (and the tensors of the layer call: masks,
encoder states), plus, in exact arithmetic, the bits each scaling dropped (meft.fixed_point); in
backward it walks the layers top-down, reconstructing each layer's input from its output with
``Coupling.inverse`` (the inverse meft.diagnostics measures too), which recomputes G and F through
``_Backprop`` with autograd on to get their gradients. It never branches on the
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
and, while a layer is undone, one stream-sized integer temporary (an encoded F or G output). So the
saved state is used up by one backward; a second one (retain_graph) is refused.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import is_fake

from meft import fixed_point as fx
from meft.config import MEFTConfig
from meft.coupling import ARITHMETICS, Arithmetic, Coupling, ExactArithmetic, SubNet
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
                checks.append(
                    (f"the input of {plan.couplings[0].name}", fx.float_magnitude(hidden), fx.stream_limit(a.dtype))
                )
            for i, c in enumerate(plan.couplings):
                if plan.observer is not None:
                    plan.observer("forward", i, x1, x2)
                if plan.exact:
                    sums.append(torch.cat((fx.checksum(x1), fx.checksum(x2))))
                state: dict[str, _RngState] = {}
                states.append(state)
                x1, x2, bits = c.step(
                    x1, x2, call, checks, before=lambda which, state=state: state.__setitem__(which, _RngState(device))
                )
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
        if plan.exact:  # NOTE [ One backward ]
            _spend(ctx)
        y1, y2, *rest = ctx.saved_tensors
        kept, rest = rest[: ctx.n_kept], rest[ctx.n_kept :]
        sums, tensors = (rest[0], rest[1:]) if plan.exact else (None, rest)
        walk = _Backprop(ctx, tensors, dy1, dy2)
        del dy1, dy2  # ``walk`` holds the gradients flowing down: no second reference keeps a spent one alive
        call = plan.call(walk.leaves)
        mismatches: list[torch.Tensor] = []
        devices = [] if ctx.device is None else [ctx.device]
        device_type = "cuda" if ctx.device is None else ctx.device.type
        with torch.random.fork_rng(devices=devices, device_type=device_type):
            for i in reversed(range(len(plan.couplings))):
                c = plan.couplings[i]
                walk.enter(c, ctx.states[i], bottom=i == 0 and not walk.need_hidden)
                with torch.no_grad():  # the inverse itself; ``walk`` turns autograd on around F and G
                    y1, y2 = c.inverse(y1, y2, tuple(None if j < 0 else kept[j] for j in ctx.where[i]), call, walk)
                walk.leave(c)
                if plan.exact:  # compared on fake tensors too (same memory); only read when real
                    mismatches.append((torch.cat((fx.checksum(y1), fx.checksum(y2))) != sums[i]).any())
                if plan.observer is not None:
                    plan.observer("backward", i, y1, y2)
        if plan.verify:
            _check_reconstruction(plan, mismatches[::-1])
        return (None, walk.hidden_grad(), *walk.call_grads(), *walk.param_grads)


def _spend(ctx) -> None:
    """Mark the exact Function's saved state used up, refusing a second backward (NOTE [ One backward ])."""
    if getattr(ctx, "spent", False):
        raise MEFTError(
            "backward ran twice through a reversible stack in exact arithmetic, whose first "
            "backward used up the streams and kept bits; run the forward again for each "
            "backward (retain_graph cannot keep them), or use MEFTConfig(arithmetic='float')"
        )
    ctx.spent = True


class _Backprop:
    """The reversible backward walking down the stack: the gradients (dy1, dy2) of the outputs of the
    layer being undone, and the gradients accumulated for the call's tensors and the parameters.

    It is the ``run`` that ``Coupling.inverse`` evaluates F and G through: it recomputes each as the
    forward ran it (RNG state, autocast) with autograd on and back-propagates through it, G with dy2
    (G's term of dy1), then F with the updated dy1 (F's term of dx2). ``leave`` then hands the layer's
    input gradients down: dx1 = lam * dy1, dx2 = beta * dy2 + F's term (docs/MEFT.md section 1).
    """

    def __init__(self, ctx, tensors, dy1: torch.Tensor | None, dy2: torch.Tensor | None) -> None:
        plan: _Plan = ctx.plan
        self.autocast = ctx.autocast
        self.need_hidden = ctx.needs_input_grad[1]
        self.needs = ctx.needs_input_grad[2 : 2 + len(tensors)]
        self.leaves = [t.detach().requires_grad_(True) if need else t.detach() for t, need in zip(tensors, self.needs)]
        self.wanted = [leaf for leaf, need in zip(self.leaves, self.needs) if need]
        self.tensor_grads: list[torch.Tensor | None] = [None] * len(self.wanted)
        self.index = {id(p): i for i, p in enumerate(plan.params)}
        self.param_grads: list[torch.Tensor | None] = [None] * len(plan.params)
        self.dy1, self.dy2, self.df = dy1, dy2, None
        self.state: dict[str, _RngState] = {}
        self.params: list[nn.Parameter] = []
        self.bottom = False

    def enter(self, c: Coupling, state: dict[str, _RngState], bottom: bool) -> None:
        """Begin undoing ``c``; ``bottom``: nothing below wants d(input), so F's input gradient is skipped."""
        if c.swap:  # (dy1, dy2) become the gradients of the layer's outputs before its swap
            self.dy1, self.dy2 = self.dy2, self.dy1
        self.state, self.params, self.bottom = state, c.trainable_parameters(), bottom

    def __call__(self, which: str, net: SubNet, x: torch.Tensor, call: Call) -> torch.Tensor:
        self.state[which].restore()
        wants_x = which == "g" or not self.bottom  # G's input gradient feeds F's backprop even at the bottom
        with torch.enable_grad(), _autocast(self.autocast):  # the forward's autocast, not backward's
            x = x.detach().requires_grad_(wants_x)
            out = net(x, call)
        if which == "g":
            self.dy1 = _add(self.dy1, self.grad_of(out, x, self.dy2))  # dy1_total
        else:
            self.df = self.grad_of(out, x if wants_x else None, self.dy1)
        return out.detach()

    def leave(self, c: Coupling) -> None:
        """The layer is undone: (dy1, dy2) become the gradients of its inputs."""
        a, df, self.df = c.arith, self.df, None
        if self.bottom:
            self.dy1 = self.dy2 = None
            return
        self.dy1, self.dy2 = _times(self.dy1, a.factor(c.lam)), _add(_times(self.dy2, a.factor(c.beta)), df)

    def grad_of(self, out: torch.Tensor, first: torch.Tensor | None, grad_out: torch.Tensor | None):
        """Accumulate d(out)/d(call tensors, params) . grad_out; return d(out)/d(first) . grad_out."""
        inputs = ([] if first is None else [first]) + self.wanted + self.params
        if grad_out is None or not out.requires_grad or not inputs:
            return None
        # as autograd does for an ordinary graph: the incoming gradient takes the output's dtype (autocast)
        grads = list(torch.autograd.grad(out, inputs, grad_out.to(out.dtype), allow_unused=True))
        first_grad = grads.pop(0) if first is not None else None
        for i, g in enumerate(grads[: len(self.wanted)]):
            self.tensor_grads[i] = _add(self.tensor_grads[i], g)
        for p, g in zip(self.params, grads[len(self.wanted) :]):
            self.param_grads[self.index[id(p)]] = _add(self.param_grads[self.index[id(p)]], g)
        return first_grad

    def hidden_grad(self) -> torch.Tensor | None:
        """d(loss)/d(stack input): both streams start as it."""
        return _add(self.dy1, self.dy2) if self.need_hidden else None

    def call_grads(self) -> list[torch.Tensor | None]:
        """Gradients of the call's tensors, in the order they were passed to ``apply``."""
        grads = iter(self.tensor_grads)
        return [next(grads) if need else None for need in self.needs]


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
        self,
        layers: nn.ModuleList,
        kind: LayerKind,
        config: MEFTConfig,
        hidden_size: int,
        activation: str,
        name: str = "layers",
        cache_top: bool = False,
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
        self._couplings: dict[torch.dtype, list[Coupling]] = {}  # NOTE [ Couplings built once ]
        self._couplings_of: tuple = ()  # what they were built from (``_coupling_source``)

    @property
    def reversible_layers(self) -> int:
        """How many layers a training step runs through the reversible Function (from the bottom)."""
        n = self.num_rev_layers
        return n - 1 if self.cache_top and n == len(self.base_layers) else n

    # NOTE [ Couplings built once ]
    # A stack's Couplings (F and G, the arithmetic, lam and beta in its form) are built once per
    # dtype of the stack input and reused by every forward: the dtype is the one thing a forward
    # varies that they depend on (the fixed-point format, the Dyadic scales). Everything else they
    # capture is named by ``_coupling_source``: the config's variant, arithmetic, lam and beta
    # (MEFTConfig is mutable), the layer kind, the stack's name, and the layer and adapter modules
    # themselves, by identity (F and G hold them). When any of it changes they are built again: a
    # module replaced, a config field set, an nn.DataParallel replica (it shares this stack's
    # attributes but holds its own layers); copy.deepcopy copies them with the modules they hold.
    # Moving the model (``.to(device)``, ``.half()``, FSDP gathering parameters) changes tensors
    # inside those same modules, which F and G read at each call; ``.half()`` changes the dtype.
    def couplings(self, dtype: torch.dtype) -> list[Coupling]:
        """The layers as couplings whose streams decode to ``dtype`` (the stack input's), built once."""
        source = self._coupling_source()
        if source != self._couplings_of:  # a new dict, not clear(): a DataParallel replica shares the old one
            self._couplings, self._couplings_of = {}, source
        if dtype not in self._couplings:
            self._couplings[dtype] = self._build_couplings(dtype)
        return self._couplings[dtype]

    def _coupling_source(self) -> tuple:
        """Everything ``_build_couplings`` reads besides the dtype (NOTE [ Couplings built once ])."""
        cfg = self.meft_config
        modules = tuple((layer, *adapters.values()) for layer, adapters in zip(self.base_layers, self.adapters))
        return cfg.variant, cfg.arithmetic, cfg.lam, cfg.beta, self.kind, self.name, modules

    def _build_couplings(self, dtype: torch.dtype) -> list[Coupling]:
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
        training = self.training and torch.is_grad_enabled()
        if training:
            # No key/value cache in a training pass, for the reversible layers (F and G run twice) and the
            # ordinary ones alike: the step never reads it back, and attention given the cache's keys
            # (torch.cat's contiguous copy) instead of the projection's view can round differently in
            # fp32 (GPT-2, OPT from 8 positions on), so reversible gradients would not be ordinary
            # backprop's bits (tests/meft/test_decoders.py, test_exact.py).
            call = self.kind.without_cache(call)
        if n > 0 and training:
            s1, s2 = reversible(couplings[:n], hidden, call, self.observer)
            couplings = couplings[n:]
        else:
            s1 = s2 = arith.lift(hidden, f"the input of {couplings[0].name}")
        for c in couplings:
            s1, s2 = c(s1, s2, call)
        return self.merge(arith.carrier(s1), arith.carrier(s2))

    def extra_repr(self) -> str:
        cfg = self.meft_config
        return (
            f"{self.name}: variant={cfg.variant}, arithmetic={cfg.arithmetic}, {cfg.describe_scales()}, "
            f"num_rev_layers={self.num_rev_layers}/{len(self.base_layers)}, cache_top={self.cache_top}, "
            f"merge={cfg.merge}"
        )
