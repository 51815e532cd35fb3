"""One reversible layer and the two arithmetics it can run in.

    y1 = lam * x1 + F(x2)          x2 = (y2 - G(y1)) / beta
    y2 = beta * x2 + G(y1)         x1 = (y1 - F(x2)) / lam

A stream has a *raw* form, what the reversible Function keeps and inverts, and a *carrier*, the
float tensor F and G read and autograd differentiates:

- ``FloatArithmetic`` (the paper's): raw and carrier are the same float tensor. The inverse divides
  by lam or beta and loses about log2(1/lam) bits per layer (docs/MEFT.md, "Exact arithmetic").
- ``ExactArithmetic``: raw is a fixed-point integer tensor (int64 for float32, float64 and float16
  models, int32 for bfloat16 ones: meft.fixed_point NOTE [ Formats ]), lam and beta are dyadic rationals, and
  what a scaling drops is kept (packed), so every inverse is exact. Inverses work in the memory of
  the raw outputs they invert: backward holds one pair of integer streams, not three. The carrier is
  the raw value decoded to the model's dtype; F's and G's outputs are encoded by a deterministic
  rounding. Gradients pass through the encoding and decoding unchanged (straight-through), so
  d y1 / d x1 = lam and d y1 / d F = 1 exactly as in float arithmetic.

Nothing here knows the backbone family: F and G come from meft.variants.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from meft import fixed_point as fx
from meft.families import Call

SubNet = Callable[[torch.Tensor, Call], torch.Tensor]

#: run(which, net, x, call) -> net's output: how ``Coupling.inverse`` evaluates F (which="f") and G
#: (which="g") on the decoded stream ``x``. The reversible backward passes one that recomputes them
#: with autograd on and back-propagates through them; the output it returns has no autograd history.
Run = Callable[[str, SubNet, torch.Tensor, Call], torch.Tensor]


def evaluate(which: str, net: SubNet, x: torch.Tensor, call: Call) -> torch.Tensor:
    """``Run`` for a plain reconstruction (meft.diagnostics): F or G as it is."""
    return net(x, call)


class FloatArithmetic:
    name = "float"

    format = None  # float streams have no fixed-point format

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def scale_of(self, name: str, value: float) -> float:
        return value

    @staticmethod
    def factor(scale: float) -> float:
        return scale

    # raw values (no autograd)
    def encode(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def affine(self, x: torch.Tensor, scale: float, out: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        y = x * scale if scale != 1 else x
        return (y if out is None else y + out), None

    def inverse_affine(self, y: torch.Tensor, kept: None, scale: float, out: torch.Tensor | None) -> torch.Tensor:
        """x from y (a new tensor: ``y`` is left as it was)."""
        x = y if out is None else y - out
        return x / scale if scale != 1 else x

    # streams (autograd)
    def lift(self, h: torch.Tensor, where: str = "") -> torch.Tensor:
        return h

    def carrier(self, stream: torch.Tensor) -> torch.Tensor:
        return stream

    def plain_affine(self, x: torch.Tensor, scale: float, out: torch.Tensor | None) -> torch.Tensor:
        return self.affine(x, scale, out)[0]

    def stream(self, carrier: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        return carrier

    def raw(self, stream: torch.Tensor) -> torch.Tensor:
        return stream

    def measure(self, where: str, f, y1, g, y2, checks: list) -> None:
        """Float streams have no range to leave."""


class ExactStream(NamedTuple):
    raw: torch.Tensor  # fixed point (meft.fixed_point.format_for the carrier's dtype)
    carrier: torch.Tensor  # raw decoded to the model's dtype; carries autograd


class _Decode(torch.autograd.Function):
    """decode(raw) in value; in gradient, the identity onto ``surrogate`` (straight-through)."""

    @staticmethod
    def forward(ctx, raw: torch.Tensor, surrogate: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return fx.decode(raw, dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, grad, None


class ExactArithmetic:
    name = "exact"

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.format = fx.format_for(dtype)

    def scale_of(self, name: str, value: float) -> fx.Dyadic:
        return fx.dyadic(name, value)

    @staticmethod
    def factor(scale: fx.Dyadic) -> float:
        return scale.value

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        return fx.encode(h, self.format)

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        return fx.decode(raw, self.dtype)

    def affine(self, x: torch.Tensor, scale: fx.Dyadic, out: torch.Tensor | None):
        z, kept = fx.scale(x, scale)
        if out is None:
            return z, kept
        e = self.encode(out)
        return (z + e if z is x else z.add_(e)), kept  # in place unless z is x

    def inverse_affine(self, y: torch.Tensor, kept, scale: fx.Dyadic, out: torch.Tensor | None) -> torch.Tensor:
        """x from y, in ``y``'s memory: the caller hands ``y`` over (it is the layer output being undone)."""
        if out is not None:
            y = y.sub_(self.encode(out))
        return fx.unscale_(y, kept, scale)

    def lift(self, h: torch.Tensor, where: str = "the stack input") -> ExactStream:
        if fx.has_values(h):
            fx.check_range([(where, fx.float_magnitude(h), fx.stream_limit(self.dtype))], self.format)
        raw = self.encode(h.detach())
        return ExactStream(raw, _Decode.apply(raw, h, self.dtype))

    def carrier(self, stream: ExactStream) -> torch.Tensor:
        return stream.carrier

    def plain_affine(self, x: ExactStream, scale: fx.Dyadic, out: torch.Tensor | None) -> ExactStream:
        with torch.no_grad():
            raw, _ = self.affine(x.raw, scale, out)
        surrogate = x.carrier * scale.value if scale.value != 1 else x.carrier
        if out is not None:
            surrogate = surrogate + out
        return ExactStream(raw, _Decode.apply(raw, surrogate, self.dtype))

    def stream(self, carrier: torch.Tensor, raw: torch.Tensor) -> ExactStream:
        return ExactStream(raw, carrier)

    def raw(self, stream: ExactStream) -> torch.Tensor:
        return stream.raw

    def measure(self, where: str, f, y1, g, y2, checks: list) -> None:
        """Append (what, magnitude) for F's and G's outputs and both new streams (see
        meft.fixed_point NOTE [ Formats ])."""
        if not fx.has_values(y1):
            return
        out_limit, stream_limit = self.format.limit, fx.stream_limit(self.dtype)
        checks.append((f"{where}: F's output", fx.float_magnitude(f), out_limit))
        checks.append((f"{where}: stream y1", fx.int_magnitude(y1), stream_limit))
        if g is not None:
            checks.append((f"{where}: G's output", fx.float_magnitude(g), out_limit))
        checks.append((f"{where}: stream y2", fx.int_magnitude(y2), stream_limit))


Arithmetic = FloatArithmetic | ExactArithmetic


def _own_buffer(x: torch.Tensor) -> torch.Tensor:
    """``x`` behind an identity node, so the gradients F (or G) sends to its input are summed among
    themselves first and reach ``x`` as one term, as the reversible backward sums them; otherwise
    autograd interleaves them with the stream's other terms and low-precision sums round differently."""
    return x.view_as(x) if x.requires_grad else x


def _own_buffers(call: Call) -> Call:
    """``call`` with each tensor that requires grad (BART's encoder states) behind its own identity node."""
    if not any(isinstance(v, torch.Tensor) and v.requires_grad for v in call.values()):
        return call
    return {k: _own_buffer(v) if isinstance(v, torch.Tensor) else v for k, v in call.items()}


ARITHMETICS = {"exact": ExactArithmetic, "float": FloatArithmetic}


@dataclass(frozen=True)
class Coupling:
    """One reversible layer: y1 = lam * x1 + F(x2), y2 = beta * x2 + G(y1), then (y2, y1) if ``swap``.

    ``g`` may be None (G = 0): meft1's top layer under merge="plm", whose G output never reaches
    the model's output. ``lam`` and ``beta`` are in the arithmetic's own form (float or Dyadic).
    """

    f: SubNet
    g: SubNet | None
    lam: Any
    beta: Any
    swap: bool
    modules: tuple[nn.Module, ...]  # whose parameters F and G use
    arith: Arithmetic
    name: str = "layer"  # for messages: "encoder layer 3"

    def step(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        call: Call,
        checks: list | None = None,
        before: Callable[[str], None] | None = None,
    ):
        """The no-grad forward on raw streams: (out1, out2, kept), kept = (bits of x1, bits of x2).

        ``checks``: a list to which (what, magnitude, limit) are appended for ``fixed_point.check_range``
        (exact arithmetic on real tensors only). ``before("f")`` and ``before("g")`` run just before F
        and G (the reversible Function saves RNG states there).
        """
        a = self.arith
        if before is not None:
            before("f")
        f = self.f(a.decode(x2), call)
        y1, kept1 = a.affine(x1, self.lam, f)
        if before is not None and self.g is not None:
            before("g")
        g = None if self.g is None else self.g(a.decode(y1), call)
        y2, kept2 = a.affine(x2, self.beta, g)
        if checks is not None:
            a.measure(self.name, f, y1, g, y2, checks)
        return (y2, y1, (kept1, kept2)) if self.swap else (y1, y2, (kept1, kept2))

    def inverse(
        self, o1: torch.Tensor, o2: torch.Tensor, kept, call: Call, run: Run = evaluate
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's raw inputs from its raw outputs (as ``step`` returned them) and kept bits.

        The one inverse: the reversible backward (``run`` recomputes F and G with autograd) and
        meft.diagnostics both call it, so what backward reconstructs is what diagnostics measure. In
        exact arithmetic the inputs are computed in the outputs' memory (``o1`` and ``o2`` are used
        up) and the kept bits are freed once used (meft.reversible NOTE [ One backward ]).
        """
        a = self.arith
        y1, y2 = (o2, o1) if self.swap else (o1, o2)
        g = None if self.g is None else run("g", self.g, a.decode(y1), call)
        x2 = a.inverse_affine(y2, kept[1], self.beta, g)
        del g  # not held while F runs: F's recomputation is backward's peak
        x1 = a.inverse_affine(y1, kept[0], self.lam, run("f", self.f, a.decode(x2), call))
        fx.release(kept[0]), fx.release(kept[1])  # this layer is restored: its kept bits are spent
        return x1, x2

    def __call__(self, s1, s2, call: Call):
        """The differentiable forward on streams (ordinary backprop, eval, no_grad)."""
        a = self.arith
        f = self.f(_own_buffer(a.carrier(s2)), _own_buffers(call))
        y1 = a.plain_affine(s1, self.lam, f)
        g = None if self.g is None else self.g(_own_buffer(a.carrier(y1)), _own_buffers(call))
        y2 = a.plain_affine(s2, self.beta, g)
        checks: list = []
        a.measure(self.name, f, a.raw(y1), g, a.raw(y2), checks)
        fx.check_range(checks, a.format)
        return (y2, y1) if self.swap else (y1, y2)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules for p in m.parameters() if p.requires_grad]
